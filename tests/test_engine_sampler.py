"""The sampler never fails a row on extreme but valid parameters, and unseeded rows differ."""
import pytest
import torch

from engine.sampler import make_generator, sample_next_tokens

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-8])
@pytest.mark.parametrize("top_p", [0.5, 1.0])
def test_tiny_temperature_is_argmax_not_an_error(temperature, top_p):
    """Audit finding: logits / 5e-324 overflowed to inf -> NaN -> empty top-p mask -> IndexError, which
    failed every sequence of the batch. A tiny temperature now samples the argmax."""
    logits = torch.tensor([[0.1, 2.5, -1.0, 2.4], [3.0, 0.0, 0.0, 0.0]])
    gens = [make_generator(1, logits.device), make_generator(2, logits.device)]
    assert sample_next_tokens(logits, [temperature, temperature], [top_p, top_p], gens) == [1, 0]


def test_unseeded_generators_differ():
    draws = {float(torch.rand((), generator=make_generator(None, torch.device("cpu")))) for _ in range(4)}
    assert len(draws) == 4
