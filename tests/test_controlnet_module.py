"""Our ControlNet against the host's (comfy.ldm.cascade.controlnet) on the same seeded random weights, for
each bottleneck; against the original's outputs (../shared/fixtures/forward/controlnet.*); and the four
released files' keys and shapes, built on the meta device, with the spec read back from those shapes."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.controlnet.checkpoint import controlnet_spec
from stable_cascade_pack.controlnet.module import RELEASED_INJECTION_BLOCKS, ControlNet
from test_stage_fixtures import load_fixture
from test_stage_parity_host import assert_matches, random_state_dict

RELEASED = {
    # reference entry: (kind, bottleneck, c_in, injection blocks)
    "controlnet_canny": ("canny", "effnet", 1, RELEASED_INJECTION_BLOCKS),
    "controlnet_inpainting": ("inpainting", "effnet", 4, RELEASED_INJECTION_BLOCKS),
    "controlnet_sr": ("super_resolution", "large", 16, RELEASED_INJECTION_BLOCKS),
    "controlnet_identity": ("identity", "simple", 512, list(range(64))),
}


def host_controlnet(**kwargs):
    import comfy.ldm.cascade.controlnet
    import comfy.ops

    return comfy.ldm.cascade.controlnet.ControlNet(**kwargs, operations=comfy.ops.disable_weight_init)


def host_outputs_as_list(host_out):
    return host_out["input"][::-1]  # the host hands the list reversed, consumed from its end


def assert_same_lists(ours, theirs):
    assert len(ours) == len(theirs)
    assert [o is None for o in ours] == [t is None for t in theirs]
    for o, t in zip(ours, theirs):
        if o is not None:
            assert_matches(o, t)


@pytest.mark.parametrize("c_in", [1, 3, 4])
def test_effnet_bottleneck_matches_host(host_modules, c_in):
    kwargs = dict(c_in=c_in, c_proj=64, proj_blocks=[0, 4, 9])
    theirs = host_controlnet(**kwargs)
    ours = ControlNet(**kwargs)
    weights = random_state_dict(theirs.state_dict(), seed=c_in)
    theirs.load_state_dict(weights, strict=True)
    ours.load_state_dict(weights, strict=True)
    control = torch.rand(2, c_in, 70, 98, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours.eval()(control)
        assert_same_lists(out, host_outputs_as_list(theirs.eval()(control)))
    assert out[0].shape[:2] == (2, 64) and out[0].abs().max() > 0


def test_simple_bottleneck_matches_host(host_modules):
    kwargs = dict(c_in=32, c_proj=48, proj_blocks=list(range(6)), bottleneck_mode="simple")
    theirs, ours = host_controlnet(**kwargs), ControlNet(**kwargs)
    weights = random_state_dict(theirs.state_dict(), seed=5)
    theirs.load_state_dict(weights, strict=True)
    ours.load_state_dict(weights, strict=True)
    control = torch.randn(1, 32, 5, 7, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert_same_lists(ours.eval()(control), host_outputs_as_list(theirs.eval()(control)))


def test_large_bottleneck_matches_host(host_modules):
    """At its real size (its widths are fixed); our network shares the host's tensors to halve the memory."""
    kwargs = dict(c_in=16, c_proj=32, proj_blocks=[0, 4], bottleneck_mode="large")
    theirs = host_controlnet(**kwargs)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, tensor in theirs.state_dict().items():
            fan_in = tensor[0].numel() if tensor.dim() >= 2 else 25
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in ** 0.5)
    ours = ControlNet(**kwargs, device="meta")
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    control = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = ours.eval()(control)
        assert_same_lists(out, host_outputs_as_list(theirs.eval()(control)))
    assert out[4].abs().max() > 0


def test_original_fixture_and_stage_c_injection(fixtures_dir):
    meta = json.loads((fixtures_dir / "forward" / "controlnet.json").read_text())
    ours = ControlNet(**meta["constructor_kwargs"])
    ours.load_state_dict(load_file(fixtures_dir / "forward" / "controlnet.state_dict.safetensors"), strict=True)
    io = load_file(fixtures_dir / "forward" / "controlnet.io.safetensors")
    with torch.no_grad():
        residuals = ours.eval()(io["control"])
    blocks = meta["constructor_kwargs"]["proj_blocks"]
    assert len(residuals) == max(blocks) + 1
    for block, residual in enumerate(residuals):
        if block in blocks:
            torch.testing.assert_close(residual, io[f"cnet.{block}"], atol=1e-5, rtol=1e-4)
        else:
            assert residual is None

    stage_c, stage_c_io = load_fixture(fixtures_dir, "stage_c")
    batch = io["control"].shape[0]
    inputs = [stage_c_io[k][:batch] for k in ("x", "r", "clip_text", "clip_text_pooled", "clip_img")]
    with torch.no_grad():
        out = stage_c(*inputs, cnet=residuals)
    torch.testing.assert_close(out, io["stage_c_out_with_cnet"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_files_keys_shapes_and_spec(reference_dir, name):
    expected = json.loads((reference_dir / "official_state_dict_keys.json").read_text())[name]
    spec = controlnet_spec(expected["keys"], name)
    kind, bottleneck, c_in, blocks = RELEASED[name]
    assert (spec.kind, spec.bottleneck, spec.c_in, spec.c_proj, list(spec.proj_blocks)) == (kind, bottleneck, c_in, 2048, blocks)
    model = ControlNet(**spec.constructor_kwargs(), device="meta")
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected["keys"]
    assert sum(p.numel() for p in model.parameters()) == expected["n_params"]


@pytest.mark.parametrize("shapes,message", [
    ({"conv_in.weight": (320, 4, 3, 3)}, "no Stable Cascade ControlNet backbone"),
    ({"backbone.0.0.weight": (24, 4, 3, 3)}, "no projections"),
    ({"backbone.0.0.weight": (24, 4, 3, 3), **{f"projections.{i}.2.weight": (2048, 1280, 1, 1) for i in range(5)}},
     "has 5 projections"),
    ({"backbone.0.0.weight": (24, 7, 3, 3), **{f"projections.{i}.2.weight": (2048, 1280, 1, 1) for i in range(8)}},
     "7 input channels"),
])
def test_spec_refuses_what_it_cannot_place(shapes, message):
    with pytest.raises(ValueError, match=message):
        controlnet_spec(shapes, "thing.safetensors")
