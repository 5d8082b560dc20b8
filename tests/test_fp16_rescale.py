"""Stage C rescaled for fp16 (stages/fp16_rescale.py), pure PyTorch on seeded tiny networks.

fp16 matmul, conv, LayerNorm and attention all run on this CPU with this torch, so the fp16 runs
below are real fp16 arithmetic, not emulated.
"""
import copy

import pytest
import torch
from conftest import seeded_random

from stable_cascade_pack.samplers.gdf import sample
from stable_cascade_pack.stages.fp16_rescale import (
    FP16_MAX, TARGET_PEAK, Fp16RescaleError, PeakRecorder, RescaledStream, calibrate_block_scales,
    calibration_inputs, scales_for_peaks,
)
from stable_cascade_pack.stages.stage_c import StageC
from stable_cascade_pack.stages.trunk import PlainStream

# Two levels like the released model; the deeper up level repeats its blocks once more (a repeat
# mapper, which no released Stage C has, but the trunk supports); the last level has three
# TimestepBlocks, like the released last group has eight.
TINY = dict(c_hidden=[64, 64], nhead=[1, 1], blocks=[[1, 2], [2, 3]], block_repeat=[[1, 1], [2, 1]],
            level_config=["CTA", "CTA"], c_cond=64, c_r=64, c_clip_seq=4, dropout=[0, 0])
# Largest |fp16 - fp32| allowed, as a fraction of the fp32 output's largest value. Measured on these
# seeded networks: plain fp16 (where it does not overflow) and rescaled fp16 both about 2e-3, bf16
# (the released models' dtype) about 1.5e-2.
FP16_TOLERANCE = 5e-3


def stage_c(seed):
    return seeded_random(StageC(**TINY), seed)


def exploding_stage_c(seed, growth=40.0):
    """A seeded network whose last group multiplies the stream by about `growth` per TimestepBlock (the
    FiLM's 1 + a), as the released model's last group does: its hidden states pass fp16's 65504 there."""
    network = stage_c(seed)
    with torch.no_grad():
        for block in network.up_blocks[-1]:
            if hasattr(block, "film"):
                block.mapper.bias[: block.mapper.out_features // 2] += growth - 1
    return network


def inputs(seed, batch=2, size=6):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(batch, 16, size, size + 1, generator=g),
        r=torch.rand(batch, generator=g),
        clip_text=torch.randn(batch, 77, 1280, generator=g),
        clip_text_pooled=torch.randn(batch, 1, 1280, generator=g),
        clip_img=torch.randn(batch, 1, 768, generator=g),
        sca=torch.rand(batch, generator=g),
        crp=torch.rand(batch, generator=g),
    )


def control_residuals(seed, batch=2):
    """One entry per ResBlock call of TINY (1 + 2 down, 2*2 + 3 up), some None, other sizes."""
    g = torch.Generator().manual_seed(seed)
    return [None if i in (1, 4) else torch.randn(batch, 64, 5, 8, generator=g) * 3 for i in range(10)]


def as_dtype(tensors, dtype):
    return {k: v if k in ("r", "sca", "crp") else v.to(dtype) for k, v in tensors.items()}  # noise levels stay fp32


def relative_difference(ours, reference):
    return ((ours.float() - reference.float()).abs().max() / reference.float().abs().max()).item()


def block_peaks(network, example):
    recorder = PeakRecorder()
    network(**example, stream=recorder)
    return recorder.block_peaks


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("model", ["plain", "exploding"])
@torch.no_grad()
def test_rescaled_equals_plain_in_fp32(seed, model):
    """With ControlNet residuals and the t_conds. The plain seeded models' streams peak around 10-100: their
    factors are chosen for a target of 8 instead of 4096 so that nearly every block is rescaled (LayerNorm's
    eps, 1e-6, is the only inexact step, and it stays negligible while the scaled stream is not tiny)."""
    network = stage_c(seed) if model == "plain" else exploding_stage_c(seed)
    example = inputs(seed)
    plain = network(**example, cnet=control_residuals(seed))
    if model == "plain":
        scales = scales_for_peaks(block_peaks(network, calibration_inputs(network)), target=8)
    else:
        scales = calibrate_block_scales(network, calibration_inputs(network))
    assert sum(s < 1 for s in scales) >= (20 if model == "plain" else 5), scales
    rescaled = network(**example, cnet=control_residuals(seed), stream=RescaledStream(scales))
    assert relative_difference(rescaled, plain) <= 1e-5
    # the residuals and the branches' scaling both matter: the test could fail
    assert relative_difference(network(**example), plain) > 1e-3
    naive = network(**example, cnet=control_residuals(seed), stream=StreamScaledAlone(scales))
    assert relative_difference(naive, plain) > 1e-3


class StreamScaledAlone(RescaledStream):
    """The wrong way: the stream multiplied by the factors, the blocks run unchanged."""

    def block(self, trunk, block, x, *args, **kwargs):
        return PlainStream.block(self, trunk, block, self._enter_block(x), *args, **kwargs)


def test_factors_are_powers_of_two_that_bring_each_peak_under_the_target():
    peaks = [0.0, 3.0, TARGET_PEAK, TARGET_PEAK * 1.01, 1e6]
    assert scales_for_peaks(peaks) == [1.0, 1.0, 1.0, 0.5, 2.0 ** -8]
    assert all(p * s <= TARGET_PEAK for p, s in zip(peaks, scales_for_peaks(peaks)))


@torch.no_grad()
def test_a_model_past_fp16s_range_is_inf_in_plain_fp16_and_close_to_fp32_rescaled():
    network = exploding_stage_c(3)
    example = inputs(3)
    recorder = PeakRecorder()
    reference = network(**example, stream=recorder)
    assert max(recorder.block_peaks) > FP16_MAX, "the test model must exceed fp16's range"
    assert max(recorder.level_output_peaks) < FP16_MAX, "only the last group exceeds it, as in the released model"
    assert torch.isfinite(reference).all()

    scales = calibrate_block_scales(network, calibration_inputs(network))
    assert min(scales) < 1.0 and scales[0] == 1.0, scales
    half = copy.deepcopy(network).half()
    plain_half = half(**as_dtype(example, torch.float16))
    assert not torch.isfinite(plain_half).all()

    half.fp16_block_scales = scales
    rescaled_half = half(**as_dtype(example, torch.float16))
    assert rescaled_half.dtype == torch.float16 and torch.isfinite(rescaled_half).all()
    assert relative_difference(rescaled_half, reference) <= FP16_TOLERANCE
    bf16 = copy.deepcopy(network).bfloat16()(**as_dtype(example, torch.bfloat16))
    assert relative_difference(rescaled_half, reference) < relative_difference(bf16, reference)
    # fp32 ignores the factors unless asked: the plain path stays the plain path
    network.fp16_block_scales = scales
    assert torch.equal(network(**example), reference)


@torch.no_grad()
def test_calibration_refuses_a_model_whose_skip_overflows():
    network = stage_c(4)
    with torch.no_grad():  # make the first (down) level's output huge: it enters a skip at its true scale
        for block in network.down_blocks[0]:
            if hasattr(block, "film"):
                block.mapper.bias[: block.mapper.out_features // 2] += 1e5
    with pytest.raises(Fp16RescaleError, match="level output reaches .* skip connection"):
        calibrate_block_scales(network, calibration_inputs(network))


def gdf_run(model, conditions, unconditional, dtype):
    def epsilon(x, r, **c):
        return model(x.to(dtype), r, **{k: v.to(dtype) for k, v in c.items()}).float()
    return sample(epsilon, shape=(1, 16, 6, 6), conditions=conditions, unconditional=unconditional, steps=8,
                  cfg=4.0, cfg_rho=0.7, shift=2.0, sampler="ddpm", generator=torch.Generator().manual_seed(9))


def text(seed):
    g = torch.Generator().manual_seed(seed)
    return dict(clip_text=torch.randn(1, 77, 1280, generator=g), clip_text_pooled=torch.randn(1, 1, 1280, generator=g),
                clip_img=torch.zeros(1, 1, 768))


@torch.no_grad()
def test_a_whole_gdf_sampling_run_in_fp16_matches_fp32():
    network = exploding_stage_c(5)
    half = copy.deepcopy(network).half()
    half.fp16_block_scales = calibrate_block_scales(network, calibration_inputs(network))
    reference = gdf_run(network, text(1), text(2), torch.float32)
    assert torch.isfinite(reference).all()
    result = gdf_run(half, text(1), text(2), torch.float16)
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= FP16_TOLERANCE
    half.fp16_block_scales = None
    assert not torch.isfinite(gdf_run(half, text(1), text(2), torch.float16)).all()


@torch.no_grad()
def test_a_gdf_run_with_a_controlnet_residual_in_fp16_matches_fp32():
    network = exploding_stage_c(6)
    half = copy.deepcopy(network).half()
    half.fp16_block_scales = calibrate_block_scales(network, calibration_inputs(network))
    residuals = control_residuals(6, batch=2)  # the CFG-doubled batch: conditional, then unconditional

    def with_control(model, dtype):
        def run(x, r, **c):
            return model(x, r, **c, cnet=[None if t is None else t.to(dtype) for t in residuals])
        return run

    reference = gdf_run(with_control(network, torch.float32), text(1), text(2), torch.float32)
    assert relative_difference(reference, gdf_run(network, text(1), text(2), torch.float32)) > 1e-2
    result = gdf_run(with_control(half, torch.float16), text(1), text(2), torch.float16)
    assert torch.isfinite(result).all()
    assert relative_difference(result, reference) <= FP16_TOLERANCE


def test_factors_for_another_network_are_refused_by_name():
    network = stage_c(0).half()
    network.fp16_block_scales = [0.5] * 3
    with pytest.raises(Fp16RescaleError, match="computed for another network"):
        network(**as_dtype(inputs(0), torch.float16))


@torch.no_grad()
def test_calibration_refuses_weights_that_are_not_finite():
    network = stage_c(7)
    network.down_blocks[0][0].channelwise[0].weight[0, 0] = float("inf")  # as a bf16 value beyond 65504 becomes when stored in fp16
    with pytest.raises(Fp16RescaleError, match="not finite"):
        calibrate_block_scales(network, calibration_inputs(network))
