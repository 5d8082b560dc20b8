"""Small models with real weights: original / host / bundled layouts -> pack layout -> the host's
modules load them strictly and compute the same outputs (the original code's, for the fixtures)."""
import json

import pytest
import torch
from conftest import seeded_random
from safetensors.torch import load_file, save_file

from stable_cascade_pack.stages.checkpoint import extract, identify, load_checkpoint
from stable_cascade_pack.stages.checkpoint.layouts import convert_state_dict

FORWARD = ["stage_c", "stage_b", "stage_a", "previewer"]


def fixture(fixtures_dir, name):
    meta = json.loads((fixtures_dir / "forward" / f"{name}.json").read_text())
    state_dict = load_file(str(fixtures_dir / "forward" / f"{name}.state_dict.safetensors"))
    io = load_file(str(fixtures_dir / "forward" / f"{name}.io.safetensors"))
    return meta, state_dict, io


def host_model(kind, config):
    import comfy.ops
    from comfy.ldm.cascade.stage_a import StageA
    from comfy.ldm.cascade.stage_b import StageB
    from comfy.ldm.cascade.stage_c import StageC
    from comfy.ldm.cascade.stage_c_coder import Previewer

    if kind == "stage_c":
        return StageC(**config, operations=comfy.ops.disable_weight_init)
    if kind == "stage_b":
        return StageB(**config, operations=comfy.ops.disable_weight_init)
    if kind == "stage_a":
        return StageA(**{k: v for k, v in config.items() if k != "scale_factor"})
    return Previewer(**config)


def load_strict(kind, state_dict, config):
    model = host_model(kind, config)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@pytest.mark.parametrize("name", FORWARD + ["controlnet"])
def test_fixture_identified_with_constructor_kwargs(fixtures_dir, name):
    meta, state_dict, _ = fixture(fixtures_dir, name)
    info = identify(state_dict)
    if name == "controlnet":
        assert (info.kind, info.variant) == ("controlnet", "custom")
        return
    assert info.kind == name
    assert info.variant == (None if name in ("stage_a", "previewer") else "custom")
    assert info.layout == "original"
    assert info.config == meta["constructor_kwargs"]


@pytest.mark.parametrize("name", FORWARD)
def test_fixture_converts_and_reproduces_the_original_outputs(fixtures_dir, host_modules, name):
    meta, state_dict, io = fixture(fixtures_dir, name)
    pack_state_dict, config = extract(state_dict, want=name, source_name=f"{name}.state_dict.safetensors")
    model = load_strict(name, pack_state_dict, config)
    with torch.no_grad():
        if name == "stage_c":
            out = model(io["x"], io["r"], io["clip_text"], io["clip_text_pooled"], io["clip_img"])
            expected = io["out"]
        elif name == "stage_b":
            out = model(io["x"], io["r"], io["effnet"], io["clip"])
            expected = io["out"]
        elif name == "stage_a":
            # the host's StageA leaves the 0.43 scale to its VAE wrapper
            out, expected = model.decode(io["latent"] * config["scale_factor"]), io["decoded"]
        else:
            out, expected = model(io["x"]), io["out"]
    if name == "previewer":  # the host's Previewer maps [0,1] to [-1,1] at its end (comfyui-host.md §4.2)
        out = (out + 1) / 2
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_conversion_copies_no_tensor_data(fixtures_dir):
    _, state_dict, _ = fixture(fixtures_dir, "stage_c")
    pack_state_dict, _ = extract(state_dict, want="stage_c")
    packed = state_dict["down_blocks.0.2.attention.attn.in_proj_weight"]
    to_k = pack_state_dict["down_blocks.0.2.attention.attn.to_k.weight"]
    assert to_k.untyped_storage().data_ptr() == packed.untyped_storage().data_ptr()
    assert torch.equal(to_k, packed[64:128])
    assert pack_state_dict["clf.1.weight"] is state_dict["clf.1.weight"]


def test_host_layout_passes_through_unchanged(fixtures_dir):
    _, state_dict, _ = fixture(fixtures_dir, "stage_b")
    once, config = extract(state_dict, want="stage_b")
    info = identify(once)
    assert info.layout == "host" and info.config == config
    twice, _ = extract(once, want="stage_b")
    assert twice.keys() == once.keys() and all(twice[k] is once[k] for k in once)


# -- custom structures: levels without attention, repeat mappers, a FeedForward block, patch size 2 --

CUSTOM_STAGE_C = dict(c_in=16, c_out=16, c_r=32, patch_size=1, c_cond=64, c_hidden=[64, 128, 128], nhead=[-1, 2, 2],
                      blocks=[[1, 2, 1], [1, 2, 1]], block_repeat=[[1, 2, 1], [2, 1, 1]], level_config=["CT", "CTA", "CTA"],
                      c_clip_text=48, c_clip_text_pooled=40, c_clip_img=32, c_clip_seq=2, kernel_size=5,
                      dropout=[0, 0.1, 0.1], self_attn=True, t_conds=["sca", "crp"], switch_level=[False, False])
CUSTOM_STAGE_B = dict(c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=48, c_hidden=[64, 64, 128], nhead=[-1, -1, 2],
                      blocks=[[1, 1, 2], [2, 1, 1]], block_repeat=[[1, 1, 1], [3, 2, 1]], level_config=["CT", "CTF", "CTA"],
                      c_clip=32, c_clip_seq=3, c_effnet=16, c_pixels=3, kernel_size=3,
                      dropout=[0, 0, 0.1], self_attn=True, t_conds=["sca"])


def _inputs(kind, generator):
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    if kind == "stage_c":
        return (randn(2, 16, 8, 8), torch.tensor([0.3, 0.8]), randn(2, 5, 48), randn(2, 1, 40), randn(2, 1, 32))
    return (randn(2, 4, 32, 32), torch.tensor([0.3, 0.8]), randn(2, 16, 6, 6), randn(2, 1, 32))


@pytest.mark.parametrize("kind,config", [("stage_c", CUSTOM_STAGE_C), ("stage_b", CUSTOM_STAGE_B)])
def test_custom_structure_round_trip(host_modules, kind, config):
    reference_model = seeded_random(host_model(kind, config), seed=3)
    original = dict(convert_state_dict(reference_model.state_dict(), "host", "original"))  # as released
    pack_state_dict, inferred = extract(original, want=kind, source_name="custom.safetensors")
    assert inferred == config
    assert identify(original).variant == "custom"
    model = load_strict(kind, pack_state_dict, inferred)
    inputs = _inputs(kind, torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(*inputs), reference_model(*inputs), rtol=0, atol=0)


# -- ComfyUI bundled checkpoints -----------------------------------------------------------------

def _fake_stage_c_bundle(fixtures_dir):
    _, stage_c, _ = fixture(fixtures_dir, "stage_c")
    _, previewer, _ = fixture(fixtures_dir, "previewer")
    generator = torch.Generator().manual_seed(5)
    effnet = {  # a few tensors of the real encoder's keys are enough to recognise it
        "backbone.0.0.weight": torch.randn(24, 3, 3, 3, generator=generator),
        "backbone.1.0.block.0.1.num_batches_tracked": torch.tensor(7),
        "mapper.0.weight": torch.randn(16, 1280, 1, 1, generator=generator),
    }
    text_encoder = {"text_model.encoder.layers.0.mlp.fc1.weight": torch.randn(8, 4, generator=generator)}
    vision = {"vision_model.encoder.layers.0.mlp.fc1.weight": torch.randn(8, 4, generator=generator)}
    bundle = {}
    for prefix, part in (("model.diffusion_model.", stage_c), ("vae.encoder.", effnet), ("vae.previewer.", previewer),
                         ("text_encoder.", text_encoder), ("clip_l_vision.", vision)):
        bundle.update({prefix + key: tensor for key, tensor in part.items()})
    return bundle, dict(stage_c=stage_c, effnet=effnet, previewer=previewer, text_encoder=text_encoder, clip_vision=vision)


def test_bundled_stage_c_file_gives_back_each_network(fixtures_dir, tmp_path):
    bundle, parts = _fake_stage_c_bundle(fixtures_dir)
    path = tmp_path / "stable_cascade_stage_c.safetensors"
    save_file(bundle, str(path))
    info = identify(bundle)
    assert (info.kind, info.layout) == ("bundled_stage_c", "bundled")
    assert set(info.parts) == {"stage_c", "stage_c_coder", "text_encoder", "clip_vision"}
    for want in ("stage_c", "effnet", "previewer", "text_encoder", "clip_vision"):
        extracted, config = load_checkpoint(path, want=want)
        expected = extract(parts[want], want=want)[0] if want == "stage_c" else parts[want]
        assert extracted.keys() == expected.keys(), want
        assert all(torch.equal(extracted[k], expected[k]) for k in expected), want
    _, config = load_checkpoint(path, want="stage_c")
    assert config == identify(parts["stage_c"]).config
    coder, _ = extract(bundle, want="stage_c_coder")
    assert set(coder) == {"encoder." + k for k in parts["effnet"]} | {"previewer." + k for k in parts["previewer"]}


def test_bundled_stage_b_file_gives_stage_b_and_stage_a(fixtures_dir, host_modules):
    _, stage_b, io = fixture(fixtures_dir, "stage_b")
    stage_a_meta, stage_a, stage_a_io = fixture(fixtures_dir, "stage_a")
    bundle = {"model.diffusion_model." + k: v for k, v in stage_b.items()} | {"vae." + k: v for k, v in stage_a.items()}
    assert identify(bundle).kind == "bundled_stage_b"
    pack_state_dict, config = extract(bundle, want="stage_b")
    model = load_strict("stage_b", pack_state_dict, config)
    with torch.no_grad():
        torch.testing.assert_close(model(io["x"], io["r"], io["effnet"], io["clip"]), io["out"], rtol=1e-4, atol=1e-5)
    vae_state_dict, vae_config = extract(bundle, want="stage_a")
    assert vae_config == stage_a_meta["constructor_kwargs"]
    assert vae_state_dict.keys() == stage_a.keys() and all(vae_state_dict[k] is bundle["vae." + k] for k in stage_a)
