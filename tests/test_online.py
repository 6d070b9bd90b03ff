"""Online learning with the real shipped predictor: bounded stores, guarded atomic head swaps,
refits off the prediction path, resume from save_dir. Prompts: tests/fixtures/proxy/sharegpt_600.jsonl."""
import copy
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import proxy_model.online as online
from proxy_model import load_predictor
from deployments.config import OnlineLearningConfig as OnlineConfig
from proxy_model.online import OnlineLearner, censored_pairwise_loss, head_tau
from proxy_model.online_store import LabelBuffer, PendingFeatures

FIXTURE = Path(__file__).parent / "fixtures" / "proxy" / "sharegpt_600.jsonl"
NUM_PROMPTS = 120
CONFIG = dict(min_labels=40, refit_every=40, buffer_size=200, holdout_fraction=0.25)


@pytest.fixture(scope="module")
def shipped():
    """The shipped predictor, fixture prompts, their features and predictions (computed once)."""
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()[:NUM_PROMPTS]]
    prompts = [r["prompt"] for r in rows]
    predictor = load_predictor()
    predicted, features = predictor.predict_with_features(prompts)
    return predictor, prompts, features.numpy(), np.array(predicted)


@pytest.fixture
def predictor(shipped):
    """The shared predictor with its shipped head back in place after each test."""
    pred = shipped[0]
    head, version = pred.head, pred.head_version
    yield pred
    pred.head, pred.head_version = head, version


def feed(learner: OnlineLearner, features: np.ndarray, predicted: np.ndarray, tokens: np.ndarray,
         finish_reason: str = "stop", prefix: str = "r") -> None:
    for i, (row, pred, n) in enumerate(zip(features, predicted, tokens)):
        learner.remember(f"{prefix}{i}", row, float(pred))
        learner.observe(f"{prefix}{i}", int(n), finish_reason)


def reversed_labels(predicted: np.ndarray) -> np.ndarray:
    """Lengths ranked exactly opposite to the shipped head: any sensible refit beats it."""
    return 1 + np.argsort(np.argsort(-predicted))


@pytest.mark.timeout(60)
def test_stores_are_bounded():
    buffer = LabelBuffer(capacity=50)
    for i in range(80):
        buffer.add(np.full(3, i, np.float32), i + 1, censored=i % 2 == 0)
    x, y, censored = buffer.arrays()
    assert len(buffer) == 50 and buffer.num_added == 80
    assert x[0, 0] == 30 and y[0] == 31 and y[-1] == 80 and censored.sum() == 25
    pending = PendingFeatures(max_pending=3)
    for i in range(5):
        pending.put(f"r{i}", np.zeros(3), 1.0)
    assert len(pending) == 3 and pending.num_evicted == 2
    assert pending.pop("r0") is None and pending.pop("r4") is not None


@pytest.mark.timeout(120)
def test_only_stop_and_length_become_labels(shipped, predictor):
    _, _, features, predicted = shipped
    learner = OnlineLearner(predictor, OnlineConfig(**CONFIG))
    for i, reason in enumerate(["stop", "length", "cancelled", "error"]):
        learner.remember(f"r{i}", features[i], predicted[i])
        assert learner.observe(f"r{i}", 5, reason) is (reason in ("stop", "length"))
    learner.remember("gone", features[4], predicted[4])
    learner.forget("gone")
    assert not learner.observe("gone", 5, "stop") and not learner.observe("never-seen", 5, "stop")
    assert len(learner.pending) == 0 and len(learner.buffer) == 2
    assert list(learner.buffer.arrays()[2]) == [False, True]
    learner.close()


@pytest.mark.timeout(60)
def test_censored_pairs_are_not_ordered():
    score = torch.tensor([0.0, 1.0])
    both_stopped = censored_pairwise_loss(score, torch.tensor([300.0, 256.0]), torch.tensor([False, False]))
    cut_off = censored_pairwise_loss(score, torch.tensor([300.0, 256.0]), torch.tensor([False, True]))
    longer_cut_off = censored_pairwise_loss(score, torch.tensor([10.0, 256.0]), torch.tensor([False, True]))
    assert both_stopped > 0 and cut_off == 0 and longer_cut_off > 0


@pytest.mark.timeout(60)
def test_refit_head_is_calibrated_on_the_held_back_rows(shipped, predictor):
    """The published head maps scores to tokens with quantiles of held-back rows (out-of-sample scores):
    calibrated on its own training rows, its live predictions shrank toward the middle."""
    _, _, features, predicted = shipped
    learner = OnlineLearner(predictor, OnlineConfig(**{**CONFIG, "refit_every": 1000}))
    labels = reversed_labels(predicted)
    feed(learner, features, predicted, labels)
    report = learner.refit_now().result(timeout=120)
    assert report["swapped"] is True
    holdout = report["holdout"]
    x, y, _ = learner.buffer.arrays()
    expected = predictor.head
    twin = copy.deepcopy(expected)  # recalibrating a copy on the same held-back rows changes nothing
    online.calibrate_out_of_sample(twin, x[-holdout:], y[-holdout:])
    assert torch.equal(twin.calib_scores, expected.calib_scores)
    assert torch.equal(twin.calib_log_tokens, expected.calib_log_tokens)
    trained_on = copy.deepcopy(expected)
    online.calibrate_out_of_sample(trained_on, x[:-holdout], y[:-holdout])
    assert not torch.equal(trained_on.calib_scores, expected.calib_scores)
    learner.close()


@pytest.mark.timeout(180)
def test_worse_head_is_never_swapped_in(shipped, predictor):
    """Labels in the current head's own order: it ranks the holdout perfectly, so no candidate is better."""
    _, prompts, features, predicted = shipped
    learner = OnlineLearner(predictor, OnlineConfig(**{**CONFIG, "refit_every": 1000}))
    feed(learner, features, predicted, 1 + np.argsort(np.argsort(predicted)))
    report = learner.refit_now().result(timeout=120)
    assert report["tau_before"] > 0.99 and report["tau_after"] <= report["tau_before"]
    assert report["swapped"] is False and predictor.head_version == 0
    assert predictor.predict(prompts[:4]) == pytest.approx(list(predicted[:4]))
    learner.close()


@pytest.mark.timeout(180)
def test_better_head_is_swapped_in_and_the_worker_uses_one_thread(shipped, predictor):
    _, _, features, predicted = shipped
    threads = torch.get_num_threads()
    learner = OnlineLearner(predictor, OnlineConfig(**{**CONFIG, "refit_every": 1000}))
    labels = reversed_labels(predicted)
    feed(learner, features, predicted, labels)
    shipped_head = predictor.head
    report = learner.refit_now().result(timeout=120)
    assert report["swapped"] is True and report["tau_after"] > report["tau_before"]
    assert predictor.head_version == 1 and predictor.head is not shipped_head
    assert head_tau(predictor.head, features, labels) > head_tau(shipped_head, features, labels) + 0.5
    assert learner._worker.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == threads
    assert learner.stats()["last_refit"]["swapped"] is True
    learner.close()


@pytest.mark.timeout(180)
def test_refit_is_triggered_by_labels_and_never_blocks_predictions(shipped, predictor, monkeypatch):
    """A refit held mid-way (inside fit_candidate) while requests are predicted and observed."""
    _, prompts, features, predicted = shipped
    release, entered = threading.Event(), threading.Event()
    real_fit = online.fit_candidate

    def held_fit(*args, **kwargs):
        entered.set()
        release.wait(120)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(online, "fit_candidate", held_fit)
    learner = OnlineLearner(predictor, OnlineConfig(**CONFIG))
    labels = reversed_labels(predicted)
    feed(learner, features[:40], predicted[:40], labels[:40])
    assert entered.wait(30) and learner.stats()["refit_running"]
    for i in range(40, 48):
        started_s = time.monotonic()
        tokens, rows = predictor.predict_with_features([prompts[i]])
        learner.remember(f"r{i}", rows[0], tokens[0])
        learner.observe(f"r{i}", int(labels[i]), "stop")
        assert time.monotonic() - started_s < 10
    assert learner.stats()["refit_running"] and predictor.head_version == 0
    release.set()
    assert learner._refit.result(timeout=120)["labels"] == 40
    assert learner.stats()["num_refits"] == 1
    learner.close()


@pytest.mark.timeout(180)
def test_swap_is_atomic_for_predictions(shipped, predictor):
    """Every prediction equals one head's answer, never a mix, while heads swap underneath."""
    _, prompts, features, predicted = shipped
    learner = OnlineLearner(predictor, OnlineConfig(**{**CONFIG, "refit_every": 1000}))
    feed(learner, features, predicted, reversed_labels(predicted))
    shipped_head = predictor.head
    assert learner.refit_now().result(timeout=120)["swapped"]
    heads = [predictor.head, shipped_head]
    batch = prompts[:6]
    answers = []
    for head in heads:
        predictor.swap_head(head)
        answers.append(predictor.predict(batch))
    assert answers[0] != pytest.approx(answers[1])
    seen, stop = [], threading.Event()

    def swapper():
        while not stop.is_set():
            for head in heads:
                predictor.swap_head(head)
                time.sleep(0.0005)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        for _ in range(15):
            seen.append(predictor.predict(batch))
    finally:
        stop.set()
        thread.join()
    for got in seen:
        assert got == pytest.approx(answers[0]) or got == pytest.approx(answers[1])
    learner.close()


@pytest.mark.timeout(240)
def test_restart_with_save_dir_resumes(shipped, predictor, tmp_path):
    _, prompts, features, predicted = shipped
    config = OnlineConfig(**{**CONFIG, "refit_every": 1000, "save_dir": str(tmp_path)})
    learner = OnlineLearner(predictor, config)
    feed(learner, features, predicted, reversed_labels(predicted))
    assert learner.refit_now().result(timeout=120)["swapped"]
    learned = predictor.predict(prompts[:5])
    learner.close(wait=True)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp file left behind

    restarted = OnlineLearner(load_predictor(), config)
    stats = restarted.stats()
    assert stats["labels_collected"] == NUM_PROMPTS and stats["labels_in_buffer"] == NUM_PROMPTS
    assert stats["version"] == 1 and stats["num_refits"] == 1
    assert restarted.predictor.predict(prompts[:5]) == pytest.approx(learned)
    assert "prompt" not in np.load(tmp_path / "labels.npz").files
    restarted.close()


@pytest.mark.timeout(60)
def test_online_config_is_validated_and_documented():
    from deployments.config import load_config
    from deployments.typed_config import ConfigError

    assert OnlineConfig().enabled is False
    with pytest.raises(ValueError, match="min_labels"):
        OnlineConfig(min_labels=1)
    with pytest.raises(ValueError, match="holdout_fraction"):
        OnlineConfig(holdout_fraction=1.0)
    config = load_config(None, {"predictor.online.enabled": True, "predictor.online.min_labels": 50})
    assert config.predictor.online.enabled and config.predictor.online.min_labels == 50
    with pytest.raises(ConfigError, match="predictor.online"):
        load_config(None, {"predictor.online.refit_evry": 5})


@pytest.mark.timeout(180)
def test_labels_are_saved_before_the_first_refit(shipped, predictor, tmp_path):
    """Every refit_every labels reach save_dir even while min_labels is not reached yet."""
    _, _, features, predicted = shipped
    config = OnlineConfig(**{**CONFIG, "min_labels": 100, "refit_every": 20, "save_dir": str(tmp_path)})
    learner = OnlineLearner(predictor, config)
    feed(learner, features[:40], predicted[:40], reversed_labels(predicted)[:40])
    learner.close(wait=True)
    restarted = OnlineLearner(predictor, config)
    assert restarted.stats()["labels_collected"] == 40 and restarted.stats()["num_refits"] == 0
    assert predictor.head_version == 0
    restarted.close()
