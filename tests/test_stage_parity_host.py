"""Our networks against the host's own (comfy.ldm.cascade), on the same seeded random weights.

Stage B and C in small configurations that still exercise every code path (repeats up and down,
attention at several levels, odd sizes in the up path, t_conds, ControlNet residuals); Stage A,
the EfficientNet encoder and the Previewer at their real size on small images. Also: our modules
built from the host's `comfy.ops.manual_cast` with bf16-stored weights and fp32 input.
"""
import pytest
import torch

from stable_cascade_pack.stages.effnet import EfficientNetEncoder
from stable_cascade_pack.stages.previewer import Previewer
from stable_cascade_pack.stages.stage_a import StageA
from stable_cascade_pack.stages.stage_b import StageB
from stable_cascade_pack.stages.stage_c import StageC

SMALL_STAGE_C = dict(
    c_in=16, c_out=16, c_r=64, patch_size=1, c_cond=64, c_hidden=[64, 128], nhead=[1, 2],
    blocks=[[1, 2], [2, 1]], block_repeat=[[1, 2], [2, 1]], level_config=["CTA", "CTA"],
    c_clip_text=48, c_clip_text_pooled=48, c_clip_img=32, c_clip_seq=4, kernel_size=3,
    dropout=[0.1, 0.1], self_attn=True, t_conds=["sca", "crp"], switch_level=[False],
)
SMALL_STAGE_B = dict(
    c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=64, c_hidden=[64, 128, 128, 192], nhead=[-1, 2, 2, 3],
    blocks=[[1, 1, 2, 1], [1, 2, 1, 1]], block_repeat=[[1, 2, 1, 1], [2, 1, 2, 3]],
    level_config=["CT", "CTA", "CTA", "CTA"], c_clip=32, c_clip_seq=4, c_effnet=16, c_pixels=3,
    kernel_size=3, dropout=[0, 0, 0.1, 0.1], self_attn=True, t_conds=["sca"],
)


def random_state_dict(state_dict, seed):
    """Random values for every floating entry, zero-initialised ones included; BN variances positive."""
    generator = torch.Generator().manual_seed(seed)
    filled = {}
    for key, tensor in state_dict.items():
        if not tensor.is_floating_point():
            filled[key] = tensor.clone()
        elif key.endswith("running_var"):
            filled[key] = torch.rand(tensor.shape, generator=generator) + 0.5
        else:
            fan_in = tensor[0].numel() if tensor.dim() >= 2 else 25
            filled[key] = torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5
    return filled


def assert_matches(ours, theirs):
    scale = max(1.0, theirs.abs().max().item())
    difference = (ours - theirs).abs().max().item()
    assert difference <= 1e-5 * scale, f"max abs diff {difference:.3g} at output scale {scale:.3g}"


def assert_bf16_close(ours_bf16, ours_fp32):
    assert ours_bf16.dtype == torch.float32 and torch.isfinite(ours_bf16).all()
    relative = (ours_bf16 - ours_fp32).norm() / ours_fp32.norm()
    assert relative < 0.05, f"bf16 weights drift {relative:.3g} (relative L2) from fp32"


def host_ops():
    import comfy.ops

    return comfy.ops


def load_both(ours, host, seed, drop_from_ours=()):
    weights = random_state_dict(host.state_dict(), seed)
    host.load_state_dict(weights, strict=True)
    ours.load_state_dict({k: v for k, v in weights.items() if k not in drop_from_ours}, strict=True)
    return ours.eval(), host.eval(), weights


def bf16_twin(cls, kwargs, weights):
    """Our module built from the host's manual_cast layers with bf16 weights, loaded with `weights`."""
    model = cls(**kwargs, dtype=torch.bfloat16, operations=host_ops().manual_cast)
    model.load_state_dict(weights, strict=True)
    assert next(model.parameters()).dtype == torch.bfloat16
    return model.eval()


# --- Stage C ------------------------------------------------------------------------------------

def stage_c_inputs(seed, batch=2, size=(12, 12), n_images=2):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(batch, 16, *size, generator=g),
        r=torch.rand(batch, generator=g),
        clip_text=torch.randn(batch, 7, 48, generator=g),
        clip_text_pooled=torch.randn(batch, 1, 48, generator=g),
        clip_img=torch.randn(batch, n_images, 32, generator=g),
        sca=torch.rand(batch, generator=g),
        crp=torch.rand(batch, generator=g),
    )


def control_residuals(seed, batch=2):
    """One entry per ResBlock call of SMALL_STAGE_C (1 + 2*2 down, 2*2 + 1 up), some None, odd sizes."""
    g = torch.Generator().manual_seed(seed)
    widths = [64, 128, 128, 128, 128, 128, 128, 128, 128, 64]
    return [None if i in (1, 6) else torch.randn(batch, c, 7 + i % 3, 9, generator=g) for i, c in enumerate(widths)]


@pytest.mark.parametrize("switch_level", [[False], [True]])
@torch.no_grad()
def test_stage_c_matches_host(host_modules, switch_level):
    from comfy.ldm.cascade.stage_c import StageC as HostStageC

    kwargs = dict(SMALL_STAGE_C, switch_level=switch_level)
    ours, host, weights = load_both(StageC(**kwargs), HostStageC(**kwargs, operations=host_ops().disable_weight_init), 1)
    inputs = stage_c_inputs(2)
    # host convention: everything as keyword arguments, sca/crp given, extras it passes along
    assert_matches(ours(**inputs, transformer_options={}, context=None), host(**inputs, transformer_options={}))
    without_t_conds = {k: v for k, v in inputs.items() if k not in ("sca", "crp")}
    assert_matches(ours(**without_t_conds), host(**without_t_conds))

    residuals = control_residuals(3)
    with_control = host(**inputs, control={"input": list(reversed(residuals))})
    assert_matches(ours(**inputs, control={"input": list(reversed(residuals))}), with_control)
    assert_matches(ours(**inputs, cnet=residuals), with_control)
    assert (with_control - host(**inputs)).abs().max() > 1e-3


@torch.no_grad()
def test_stage_c_bf16_weights_through_manual_cast(host_modules):
    ours = StageC(**SMALL_STAGE_C)
    weights = random_state_dict(ours.state_dict(), 4)
    ours.load_state_dict(weights)
    inputs = stage_c_inputs(5)
    ours_bf16 = bf16_twin(StageC, SMALL_STAGE_C, weights)
    residuals = control_residuals(6)
    assert_bf16_close(ours_bf16(**inputs, cnet=residuals), ours.eval()(**inputs, cnet=residuals))


def test_unknown_constructor_kwargs_raise():
    with pytest.raises(TypeError):
        StageC(**SMALL_STAGE_C, stable_cascade_stage="c", device="meta")
    with pytest.raises(TypeError):
        StageB(**SMALL_STAGE_B, c_clip_text=1280, device="meta")
    with pytest.raises(TypeError):
        StageA(scale=0.43, device="meta")


# --- Stage B ------------------------------------------------------------------------------------

def stage_b_inputs(seed, batch=2, size=(24, 40)):
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(batch, 4, *size, generator=g),
        r=torch.rand(batch, generator=g),
        effnet=torch.randn(batch, 16, 5, 7, generator=g),
        clip=torch.randn(batch, 1, 32, generator=g),
        sca=torch.rand(batch, generator=g),
    )


@torch.no_grad()
def test_stage_b_matches_host(host_modules):
    from comfy.ldm.cascade.stage_b import StageB as HostStageB

    ours, host, _ = load_both(StageB(**SMALL_STAGE_B), HostStageB(**SMALL_STAGE_B, operations=host_ops().disable_weight_init), 7)
    inputs = stage_b_inputs(8)
    # 24x40 goes 12x20 -> 6x10 -> 3x5 -> 1x2 down: the up path must resize to the skips
    assert_matches(ours(**inputs, transformer_options={}), host(**inputs, transformer_options={}))
    pixels = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    assert_matches(ours(**inputs, pixels=pixels), host(**inputs, pixels=pixels))
    positional = [inputs[k] for k in ("x", "r", "effnet", "clip")]
    assert_matches(ours(*positional), host(*positional))


@torch.no_grad()
def test_stage_b_bf16_weights_through_manual_cast(host_modules):
    ours = StageB(**SMALL_STAGE_B)
    weights = random_state_dict(ours.state_dict(), 10)
    ours.load_state_dict(weights)
    inputs = stage_b_inputs(11)
    assert_bf16_close(bf16_twin(StageB, SMALL_STAGE_B, weights)(**inputs), ours.eval()(**inputs))


# --- Stage A, EfficientNet encoder, Previewer (real size) -----------------------------------------

@pytest.fixture(scope="module")
def stage_a_pair(host_modules):
    from comfy.ldm.cascade.stage_a import StageA as HostStageA

    return load_both(StageA(), HostStageA(), 12)


@torch.no_grad()
def test_stage_a_matches_host(stage_a_pair):
    ours, host, _ = stage_a_pair
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(13))
    latent = ours.encode(images)
    # the host's Stage A works in the unscaled latent space; ours divides by scale_factor (Stage B's space)
    assert_matches(latent * 0.43, host.encode(images))
    assert_matches(ours.decode(latent), host.decode(latent * 0.43))
    quantized, _, indices, _ = host.encode(images, quantize=True)
    assert_matches(ours.encode(images, quantize=True) * 0.43, quantized)


@torch.no_grad()
def test_stage_a_bf16_weights_through_manual_cast(stage_a_pair):
    ours, _, weights = stage_a_pair
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(14))
    ours_bf16 = bf16_twin(StageA, {}, weights)
    assert_bf16_close(ours_bf16.encode(images), ours.encode(images))
    latent = ours.encode(images)
    assert_bf16_close(ours_bf16.decode(latent), ours.decode(latent))


@torch.no_grad()
def test_effnet_encoder_matches_host(host_modules):
    from comfy.ldm.cascade.stage_c_coder import EfficientNetEncoder as HostEncoder

    host = HostEncoder()
    weights = random_state_dict({k: v for k, v in host.state_dict().items() if k not in ("mean", "std")}, 15)
    host.load_state_dict(weights, strict=False)  # keeps the host's own ImageNet mean/std parameters
    ours = EfficientNetEncoder()
    ours.load_state_dict(weights, strict=True)  # the released file's keys: no mean/std
    ours.eval(), host.eval()
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(16)) * 2 - 1
    out = ours(images)
    assert out.shape == (2, 16, 2, 3)
    assert_matches(out, host(images))
    assert_bf16_close(bf16_twin(EfficientNetEncoder, {}, weights)(images), out)


@torch.no_grad()
def test_previewer_matches_host(host_modules):
    from comfy.ldm.cascade.stage_c_coder import Previewer as HostPreviewer

    ours, host, weights = load_both(Previewer(), HostPreviewer(), 17)
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(18))
    out = ours(latent)
    assert out.shape == (1, 3, 64, 64)
    # the host's previewer maps the original's [0, 1] output to [-1, 1]
    assert_matches((out - 0.5) * 2.0, host(latent))
    assert_bf16_close(bf16_twin(Previewer, {}, weights)(latent), out)
