"""The router's predictor service with online learning, without Ray: the real shipped predictor keeps each
request's features until it ends, labels only normal finishes, refits in its worker, reports in status."""
import asyncio
import time

import pytest

from deployments.config import OnlineLearningConfig, PredictorConfig
from deployments.predictor_service import PredictorService

PROMPTS = [f"{ask} (request {i})" for i, ask in enumerate(
    ["Write a long story about a dragon", "hi", "List ten fruits", "Explain relativity in detail"] * 4)]


@pytest.mark.timeout(240)
def test_features_kept_until_the_end_labels_only_from_normal_finishes():
    service = PredictorService(PredictorConfig(online=OnlineLearningConfig(
        enabled=True, min_labels=12, refit_every=4, holdout_fraction=0.25)))

    async def scenario():
        predicted = await asyncio.gather(*(service.predict(f"r{i}", p) for i, p in enumerate(PROMPTS)))
        assert all(p > 0 for p in predicted)
        assert service.status()["online"]["pending"] == len(PROMPTS)
        for i in range(14):  # normal finishes: on_finished, then the runner's on_ended
            service.on_finished(f"r{i}", i + 1, "length" if i % 5 == 4 else "stop")
            service.on_ended(f"r{i}")
        service.on_ended("r14")  # cancelled / failed: no on_finished
        service.on_ended("r15")

    asyncio.run(scenario())
    deadline = time.monotonic() + 120
    while (stats := service.status()["online"])["refit_running"] or not stats["num_refits"]:
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    assert stats["labels_collected"] == 14 and stats["pending"] == 0
    assert stats["last_refit"]["labels"] >= 12 and stats["rolling_window"] == 14


@pytest.mark.timeout(120)
def test_online_learning_off_by_default():
    service = PredictorService(PredictorConfig())

    async def scenario():
        assert await service.predict("r0", "hello") > 0
        service.on_finished("r0", 5, "stop")
        service.on_ended("r0")

    asyncio.run(scenario())
    assert service.status()["online"] == {"enabled": False}


@pytest.mark.timeout(120)
def test_labels_are_kept_in_the_predictors_units_when_predictions_are_scaled():
    """Predictions go out x length_scale, so labels come back / length_scale: a refit head then predicts
    in the predictor's units like the shipped one, instead of being scaled a second time."""
    service = PredictorService(PredictorConfig(length_scale=0.125, online=OnlineLearningConfig(
        enabled=True, min_labels=1000, refit_every=1000)))

    async def scenario():
        raw = service._predictor.predict([PROMPTS[0]])[0]
        assert await service.predict("r0", PROMPTS[0]) == pytest.approx(0.125 * raw, rel=1e-4)
        service.on_finished("r0", 10, "stop")
        service.on_ended("r0")

    asyncio.run(scenario())
    _, tokens, censored = service._online.buffer.arrays()
    assert tokens.tolist() == [80.0] and censored.tolist() == [False]
