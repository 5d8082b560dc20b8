"""ControlNet residuals as one GDF condition: batched for CFG like any condition, active over a noise range."""
import math

import torch

from stable_cascade_pack.controlnet.schedule import ControlSchedule, noise_condition_range
from stable_cascade_pack.samplers.gdf import noise_levels, sample


def residuals(value, batch=1):
    return [torch.full((batch, 2, 3, 3), float(value)), None, torch.full((batch, 2, 1, 1), float(value) * 10)]


def test_full_range_is_unbounded_and_ranges_follow_the_shifted_schedule():
    assert noise_condition_range(0.0, 1.0, 2.0) == (math.inf, -math.inf)
    r_high, r_low = noise_condition_range(0.25, 0.75, 2.0)
    assert r_high == float(noise_levels(torch.tensor(0.75), 2.0).r)
    assert r_low == float(noise_levels(torch.tensor(0.25), 2.0).r)
    assert r_high > r_low


def test_active_entries_add_up():
    early = (residuals(1), *noise_condition_range(0.0, 0.5, 2.0))
    always = (residuals(2), math.inf, -math.inf)
    schedule = ControlSchedule([early, always], 1)
    noisy, clean = float(noise_levels(torch.tensor(0.9), 2.0).r), float(noise_levels(torch.tensor(0.1), 2.0).r)
    summed = schedule.at(noisy)
    assert torch.equal(summed[0], torch.full((1, 2, 3, 3), 3.0)) and summed[1] is None
    assert torch.equal(schedule.at(clean)[2], torch.full((1, 2, 1, 1), 20.0))
    assert ControlSchedule([early], 1).at(clean) is None


def test_cat_shares_entries_and_pads_one_sided_ones_with_zeros():
    shared = (residuals(1), math.inf, -math.inf)
    positive_only = (residuals(5), math.inf, -math.inf)
    batched = ControlSchedule([shared, positive_only], 1).cat(ControlSchedule([shared], 1))
    out = batched.at(0.5)
    assert out[0].shape == (2, 2, 3, 3)
    assert torch.equal(out[0][0], torch.full((2, 3, 3), 6.0)) and torch.equal(out[0][1], torch.full((2, 3, 3), 1.0))


def test_gdf_batches_the_schedule_for_cfg_and_not_without():
    seen = []

    def model(x, r, cnet=None, **_):
        residual = cnet.at(float(r[0]))
        seen.append(None if residual is None else (residual[0].shape[0], residual[0].dtype, float(residual[0][0].mean()),
                                                   float(residual[0][-1].mean())))
        return torch.zeros_like(x)

    positive = ControlSchedule([(residuals(1), *noise_condition_range(0.5, 1.0, 2.0))], 1)
    negative = ControlSchedule([], 1)
    common = dict(shape=(1, 4, 3, 3), steps=4, shift=2.0, generator=torch.Generator().manual_seed(0))
    sample(model, conditions={"cnet": positive}, unconditional={"cnet": negative}, cfg=4.0, **common)
    assert seen == [None, None, (2, torch.float32, 1.0, 0.0), (2, torch.float32, 1.0, 0.0)]
    seen.clear()
    sample(model, conditions={"cnet": positive}, unconditional={"cnet": negative}, cfg=1.0, **common)
    assert seen == [None, None, (1, torch.float32, 1.0, 1.0), (1, torch.float32, 1.0, 1.0)]
