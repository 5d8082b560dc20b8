"""Schedule, scaler and noise condition against the original's values (fixtures/gdf/scalars)."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.samplers.gdf import noise_levels
from stable_cascade_pack.samplers.loss_weights import p2_loss_weight
from stable_cascade_pack.samplers.noise_condition import noise_condition
from stable_cascade_pack.samplers.scaler import vp_scalers
from stable_cascade_pack.samplers.schedule import LOGSNR_LIMITS, logSNR, logSNR_unclamped, t_from_logSNR

# The fixtures were computed on another CPU: transcendental functions (cos, log, acos, sigmoid)
# can differ there by an ulp or two, which the steep ends of the logSNR curve magnify. Measured
# here: logSNR <= 4.8e-7, a/b <= 1.5e-7, r <= 2.0e-6.
ATOL = {"logSNR": 2e-6, "logSNR_unclamped": 2e-6, "a": 5e-7, "b": 5e-7, "r": 5e-6, "p2_loss_weight": 5e-7}


@pytest.fixture(scope="module")
def scalars(fixtures_dir):
    return load_file(fixtures_dir / "gdf" / "scalars.safetensors")


def test_limits_are_the_shift_1_end_points(fixtures_dir):
    meta = json.loads((fixtures_dir / "gdf" / "scalars.json").read_text())
    assert LOGSNR_LIMITS == pytest.approx(meta["schedule_limits_logSNR_min_max"], abs=1e-6)


def test_every_scalar_key(scalars, scalars_shift):
    shift = scalars_shift
    t = scalars["t"]
    levels = noise_levels(t, shift)
    ours = {
        "logSNR": levels.logSNR,
        "logSNR_unclamped": logSNR_unclamped(t, shift),
        "a": levels.a,
        "b": levels.b,
        "r": levels.r,
        "p2_loss_weight": p2_loss_weight(levels.logSNR),  # training only: 1 / (1 + e^logSNR)
    }
    for key, value in ours.items():
        expected = scalars[f"shift{shift:g}.{key}"]
        assert value.dtype == torch.float32 and value.shape == expected.shape, key
        torch.testing.assert_close(value, expected, atol=ATOL[key], rtol=0, msg=key)


def test_shifted_schedule_is_clamped_to_the_shift_1_limits(scalars, scalars_shift):
    """Shifting moves the curve by -2 log(shift); the clamp stays at the shift-1 end points."""
    unclamped_at_t1 = scalars[f"shift{scalars_shift:g}.logSNR_unclamped"][-1].item()
    assert unclamped_at_t1 == pytest.approx(LOGSNR_LIMITS[0] - 2 * math.log(scalars_shift), abs=1e-4)
    assert logSNR_unclamped(1.0, scalars_shift).item() == pytest.approx(unclamped_at_t1, abs=1e-4)
    clamped_at_t1 = min(max(unclamped_at_t1, LOGSNR_LIMITS[0]), LOGSNR_LIMITS[1])
    assert logSNR(1.0, scalars_shift).item() == pytest.approx(clamped_at_t1, abs=1e-5)
    assert scalars[f"shift{scalars_shift:g}.logSNR"][-1].item() == pytest.approx(clamped_at_t1, abs=1e-5)


def test_shift_2_test_vectors():
    """reference/official.md section 8.9: the first step's r is the clamped one whatever the shift."""
    assert logSNR_unclamped(1.0, 2.0).item() < LOGSNR_LIMITS[0] - 1  # -10.60 before the clamp
    assert logSNR(1.0, 2.0).item() == pytest.approx(LOGSNR_LIMITS[0], abs=1e-6)
    assert noise_condition(logSNR(1.0, 2.0)).item() == pytest.approx(0.99358, abs=1e-5)
    assert noise_condition(logSNR(0.5, 2.0)).item() == pytest.approx(0.70564, abs=1e-5)


def test_inverse_round_trip(scalars):
    r = noise_condition(scalars["inv.logSNR"])
    torch.testing.assert_close(r, scalars["inv.r"], atol=ATOL["r"], rtol=0)
    torch.testing.assert_close(logSNR(scalars["inv.r"], 1.0), scalars["inv.logSNR_roundtrip"], atol=2e-6, rtol=0)
    # Chained through our own r: near t=0 logSNR is steep in t, so an ulp of r is 1e-4 relative.
    torch.testing.assert_close(logSNR(r, 1.0), scalars["inv.logSNR_roundtrip"], atol=1e-6, rtol=2e-4)
    # Inside the var clamp the schedule and t_from_logSNR are inverses of each other.
    t = torch.linspace(0.05, 0.95, 19)
    torch.testing.assert_close(t_from_logSNR(logSNR(t)), t, atol=2e-6, rtol=0)


def test_vp_scalers_preserve_variance():
    a, b = vp_scalers(torch.linspace(-12, 12, 49))
    torch.testing.assert_close(a**2 + b**2, torch.ones(49), atol=1e-6, rtol=0)


def test_official_test_vectors():
    """reference/official.md section 8.9."""
    stage_c = noise_levels(torch.linspace(1.0, 0.0, 21), 2.0)
    assert stage_c.logSNR[:4].tolist() == pytest.approx([-9.21024, -6.48632, -5.08779, -4.25624], abs=1e-4)
    assert stage_c.logSNR[-1].item() == pytest.approx(7.82378, abs=1e-4)
    assert stage_c.r[:3].tolist() == pytest.approx([0.99358, 0.97496, 0.94969], abs=1e-5)
    assert stage_c.r[-2:].tolist() == pytest.approx([0.10627, 0.00712], abs=1e-5)
    stage_b = noise_levels(torch.linspace(1.0, 0.0, 11), 1.0)
    assert stage_b.logSNR[[0, 1, 2, -1]].tolist() == pytest.approx([-9.21024, -3.70150, -2.26521, 9.21007], abs=1e-4)
    assert stage_b.r[1:-1].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], abs=1e-5)
    img2img_start = noise_levels(torch.tensor([0.8]), 1.0)
    assert (img2img_start.logSNR.item(), img2img_start.a.item()) == pytest.approx((-2.26521, 0.30667), abs=1e-5)
