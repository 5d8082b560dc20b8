"""GDF's training side: `diffuse` (noised, noise, target, logSNR, r, loss weight), the epsilon target,
the P2 and adaptive loss weights, against the original's values in fixtures/gdf/scalars."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.samplers.forward_process import diffuse, training_times
from stable_cascade_pack.samplers.loss_weights import AdaptiveLossWeight, p2_loss_weight
from stable_cascade_pack.samplers.targets import x0_from_epsilon

# Same tolerances as test_gdf_schedule (transcendentals differ by an ulp between CPUs).
ATOL = {"logSNR": 2e-6, "a": 5e-7, "b": 5e-7, "r": 5e-6, "p2_loss_weight": 5e-7}


@pytest.fixture(scope="module")
def scalars(fixtures_dir):
    return load_file(fixtures_dir / "gdf" / "scalars.safetensors")


@pytest.fixture(scope="module")
def shifts(fixtures_dir):
    return json.loads((fixtures_dir / "gdf" / "scalars.json").read_text())["shifts"]


def test_diffuse_matches_the_original_on_the_t_grid(scalars, shifts):
    t = scalars["t"]
    generator = torch.Generator().manual_seed(5)
    x0 = torch.randn(len(t), 4, 3, 3, generator=generator)
    noise = torch.randn(len(t), 4, 3, 3, generator=generator)
    for shift in shifts:
        key = f"shift{shift:g}"
        out = diffuse(x0, noise=noise, t=t, shift=shift)
        expected_logSNR = scalars[f"{key}.logSNR"]
        torch.testing.assert_close(out.logSNR, expected_logSNR, atol=ATOL["logSNR"], rtol=0)
        torch.testing.assert_close(out.r, scalars[f"{key}.r"], atol=ATOL["r"], rtol=0)
        # The original computes the loss weight with loss_shift=1 whatever the schedule shift.
        torch.testing.assert_close(out.loss_weight, scalars[f"{key}.p2_loss_weight"], atol=ATOL["p2_loss_weight"], rtol=0)
        a = scalars[f"{key}.a"].view(-1, 1, 1, 1)
        b = scalars[f"{key}.b"].view(-1, 1, 1, 1)
        torch.testing.assert_close(out.noised, x0 * a + noise * b, atol=2e-6, rtol=0)
        assert torch.equal(out.noise, noise) and torch.equal(out.target, noise)  # epsilon target
        # The target inverts: the true epsilon recovers x0 exactly up to rounding.
        torch.testing.assert_close(x0_from_epsilon(out.noised, out.target, a, b)[1:-1], x0[1:-1], atol=1e-4, rtol=0)


def test_p2_weight_is_one_over_one_plus_snr(scalars, shifts):
    for shift in shifts:
        logSNR = scalars[f"shift{shift:g}.logSNR"]
        torch.testing.assert_close(p2_loss_weight(logSNR), scalars[f"shift{shift:g}.p2_loss_weight"], atol=5e-7, rtol=0)
    logSNR = torch.tensor([-3.0, 0.0, 2.0])
    # loss_shift s moves logSNR by 2 log s before weighting
    torch.testing.assert_close(p2_loss_weight(logSNR, shift=2.0), torch.sigmoid(-(logSNR + 2 * math.log(2.0))))


def test_training_times_and_draw_order():
    generator = torch.Generator().manual_seed(3)
    t = training_times(10000, generator)
    assert t.min() >= 0.001 and t.max() <= 1.0 and 0.45 < t.mean() < 0.55
    # diffuse draws the noise first, then t, like the original (randn_like, then schedule(batch)).
    x0 = torch.zeros(2, 4, 3, 3)
    out = diffuse(x0, generator=torch.Generator().manual_seed(11))
    replay = torch.Generator().manual_seed(11)
    noise = torch.randn(2, 4, 3, 3, generator=replay)
    t_expected = training_times(2, replay)
    assert torch.equal(out.noise, noise)
    torch.testing.assert_close(out.logSNR, diffuse(x0, noise=noise, t=t_expected).logSNR)


def test_adaptive_weight_tracks_the_inverse_loss_per_bucket():
    weight = AdaptiveLossWeight()
    low, high = torch.tensor([-5.0]), torch.tensor([5.0])
    assert weight(low).item() == 1.0 and weight(high).item() == 1.0  # every bucket starts at loss 1
    for _ in range(1000):
        weight.update(low, torch.tensor([4.0]))
        weight.update(high, torch.tensor([0.25]))
    assert weight(low).item() == pytest.approx(1 / 4.0, rel=0.01)
    assert weight(high).item() == pytest.approx(1 / 0.25, rel=0.01)
    assert weight(torch.tensor([0.0])).item() == 1.0  # an untouched bucket keeps weight 1
    restored = AdaptiveLossWeight()
    restored.load_state_dict(weight.state_dict())
    assert torch.equal(restored(low), weight(low))
