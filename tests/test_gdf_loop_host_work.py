"""The GDF loop does no host work between network calls: every draw of the CPU generator is taken
before the first step (in the documented order, so the numbers are those of drawing step by step;
tests/test_gdf_sample.py and tests/test_gdf_fixtures.py check the order and the values)."""
import pytest
import torch

from stable_cascade_pack.samplers.gdf import draw_step_noise, sample

SHAPE = (1, 4, 5, 3)  # 60 values: not a multiple of 16, where one stacked randn call would differ


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "lcm"])
def test_the_generator_is_not_touched_once_the_first_step_runs(sampler):
    generator = torch.Generator().manual_seed(4)
    states = []

    def model(x, r, **conditions):
        states.append(generator.get_state())
        return torch.tanh(x) * 0.5

    sample(model, shape=SHAPE, steps=5, sampler=sampler, generator=generator)
    assert len(states) == 5
    assert all(torch.equal(state, generator.get_state()) for state in states)


def test_step_noise_is_the_step_by_step_draws_in_one_tensor():
    steps = 4
    upfront = draw_step_noise(steps, SHAPE, torch.Generator().manual_seed(9), "cpu")
    one_by_one = torch.Generator().manual_seed(9)
    expected = torch.stack([torch.randn(SHAPE, generator=one_by_one) for _ in range(steps)])
    assert torch.equal(upfront, expected)
    # Why not torch.randn((steps, *SHAPE)): it consumes the generator differently.
    assert not torch.equal(torch.randn((steps, *SHAPE), generator=torch.Generator().manual_seed(9)), expected)
