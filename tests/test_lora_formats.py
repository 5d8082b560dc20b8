"""Every LoRA format on a small seeded Stage C through the host's patcher.

Each patched weight must equal W + strength * scale * up @ down computed here, independently of the
pack; chains add up; strength 0 changes nothing; unpatching restores the base bit-exactly."""
import struct

import pytest
import torch
from conftest import seeded_random
from safetensors.torch import save_file

from stable_cascade_pack.lora import LoraError, identify_lora, load_lora_file, read_lora, structure
from stable_cascade_pack.lora.save import to_comfyui_keys, to_original_keys
from stable_cascade_pack.stages.stage_c import StageC

SMALL = dict(c_cond=32, c_r=32, c_hidden=[32, 32], nhead=[2, 2], blocks=[[1, 1], [1, 1]], level_config=["CTA", "CTA"],
             c_clip_text=24, c_clip_text_pooled=24, c_clip_img=16, dropout=[0.0, 0.0])


def small_stage_c(seed=0, **overrides):
    return seeded_random(StageC(**{**SMALL, **overrides}), seed)


def shapes_of(network):
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def low_rank_pair(weight_shape, rank, generator):
    """(up, down) shaped the kohya way: Linear [out, r] / [r, in]; Conv2d [out, r, 1, 1] / [r, in, kh, kw]."""
    if len(weight_shape) == 4:
        return (torch.randn(weight_shape[0], rank, 1, 1, generator=generator) * 0.1,
                torch.randn(rank, *weight_shape[1:], generator=generator) * 0.1)
    return torch.randn(weight_shape[0], rank, generator=generator) * 0.1, torch.randn(rank, weight_shape[1], generator=generator) * 0.1


# module (pack key without .weight) -> the name each format gives it
ATTENTION = ["down_blocks.0.2.attention.attn.to_q", "down_blocks.0.2.attention.attn.to_k", "down_blocks.0.2.attention.attn.to_v",
             "down_blocks.0.2.attention.attn.out_proj", "up_blocks.1.2.attention.attn.to_v"]
OTHERS = ["down_blocks.1.2.kv_mapper.1", "up_blocks.0.0.channelwise.0", "embedding.1", "clf.1"]


def onetrainer_name(module):
    """Diffusers-style attention names; up blocks as some versions wrote them (attention_attn_to_out)."""
    if module.startswith("up_blocks"):
        name = module.replace(".attention.attn.out_proj", ".attention.attn.to_out")
    else:
        name = module.replace(".attention.attn.out_proj", ".attention.to_out.0").replace(".attention.attn.to_", ".attention.to_")
    return "lora_prior_unet_" + name.replace(".", "_")


FORMATS = {
    "comfyui": (lambda m: "lora_prior_unet_" + m.replace(".", "_"), ATTENTION + OTHERS),
    "onetrainer": (onetrainer_name, ATTENTION + ["up_blocks.1.2.attention.attn.out_proj"]),
    "kohya": (lambda m: "lora_unet_" + m.replace(".", "_"), ATTENTION + OTHERS),
}


def make_lora_file(network, fmt, seed, rank=3, alpha=1.5):
    """{key: tensor} in `fmt`, and {pack weight key: (up, down, scale)} for the independent check."""
    name_of, modules = FORMATS[fmt]
    generator = torch.Generator().manual_seed(seed)
    weights = network.state_dict()
    tensors, expected = {}, {}
    for module in modules:
        up, down = low_rank_pair(weights[module + ".weight"].shape, rank, generator)
        name = name_of(module)
        tensors[f"{name}.lora_up.weight"], tensors[f"{name}.lora_down.weight"] = up, down
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
        expected[module + ".weight"] = (up, down, alpha / rank)
    return tensors, expected


def independent_patch(weight, up, down, scale, strength):
    return weight + strength * scale * (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(weight.shape)


@pytest.fixture(scope="module")
def host_model(host_modules):
    from stable_cascade_pack.nodes import host_models

    network = small_stage_c(seed=1)
    config = {**SMALL}
    return host_models.build_diffusion_model("c", {k: v.clone() for k, v in network.state_dict().items()}, config,
                                             weight_dtype=torch.float32)


def patched_weights(model_patcher):
    """The weights while the patches are applied, then unpatched; returns (patched copy, base after unpatch)."""
    model_patcher.patch_model()
    network = model_patcher.model.diffusion_model
    patched = {k: v.clone() for k, v in network.state_dict().items()}
    model_patcher.unpatch_model()
    return patched, {k: v.clone() for k, v in network.state_dict().items()}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_format_patches_equal_w_plus_scale_up_down(host_model, fmt):
    from stable_cascade_pack.nodes import lora_patches

    base = {k: v.clone() for k, v in host_model.model.diffusion_model.state_dict().items()}
    tensors, expected = make_lora_file(host_model.model.diffusion_model, fmt, seed=11)
    lora = read_lora(tensors, lora_patches.stage_c_shapes(host_model), f"{fmt}.safetensors")
    assert lora.format == fmt
    assert set(lora.unet) == set(expected)
    patched, restored = patched_weights(lora_patches.patch_model(host_model, lora, 0.8))
    for key, weight in base.items():
        if key in expected:
            torch.testing.assert_close(patched[key], independent_patch(weight, *expected[key], 0.8), rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(patched[key], weight), key
        assert torch.equal(restored[key], weight), key


def test_chained_loras_add_up_and_strength_zero_and_negative(host_model):
    from stable_cascade_pack.nodes import lora_patches

    shapes = lora_patches.stage_c_shapes(host_model)
    base = {k: v.clone() for k, v in host_model.model.diffusion_model.state_dict().items()}
    first_tensors, first = make_lora_file(host_model.model.diffusion_model, "comfyui", seed=21)
    second_tensors, second = make_lora_file(host_model.model.diffusion_model, "kohya", seed=22, rank=2, alpha=2.0)
    first_lora, second_lora = read_lora(first_tensors, shapes), read_lora(second_tensors, shapes)

    chained = lora_patches.patch_model(lora_patches.patch_model(host_model, first_lora, 1.0), second_lora, -0.5)
    patched, restored = patched_weights(chained)
    for key in first:
        expected = independent_patch(independent_patch(base[key], *first[key], 1.0), *second[key], -0.5)
        torch.testing.assert_close(patched[key], expected, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(restored[k], v) for k, v in base.items())
    assert host_model.patches == {}  # the input MODEL itself was never patched

    zero, _ = patched_weights(lora_patches.patch_model(host_model, first_lora, 0.0))
    assert all(torch.equal(zero[k], v) for k, v in base.items())


def test_save_round_trips_keep_every_delta(host_model):
    from stable_cascade_pack.nodes import lora_patches

    shapes = lora_patches.stage_c_shapes(host_model)
    tensors, _ = make_lora_file(host_model.model.diffusion_model, "onetrainer", seed=31)
    lora = read_lora(tensors, shapes)

    as_comfyui = read_lora(to_comfyui_keys(lora), shapes)
    assert as_comfyui.format == "comfyui"
    as_original = read_lora(to_original_keys(lora, shapes), shapes)
    assert as_original.format == "original"
    for key, low_rank in lora.unet.items():
        delta = low_rank.delta(shapes[key])
        torch.testing.assert_close(as_comfyui.unet[key].delta(shapes[key]), delta, rtol=0, atol=0)
        torch.testing.assert_close(as_original.unet[key].delta(shapes[key]), delta, rtol=1e-5, atol=1e-7)
    # Projections the LoRA did not patch are zero in the original layout's complete list.
    untouched = [k for k in as_original.unet if k not in lora.unet]
    assert untouched and all(not as_original.unet[k].delta(shapes[k]).any() for k in untouched)

    with pytest.raises(LoraError, match="attention projections only"):
        to_original_keys(read_lora(make_lora_file(host_model.model.diffusion_model, "kohya", seed=3)[0], shapes), shapes)


# -- detection and errors ---------------------------------------------------------------------------

def released_lora(variant, rank=1):
    """An original-format LoRA of rank 1 for a released Stage C (tiny tensors, real shapes)."""
    tensors = {}
    for n, (in_width, out_rows) in enumerate(structure.original_lora_shapes(structure.released_shapes(f"stage_c_{variant}"))):
        tensors[f"weights.{n}.lora_down"] = torch.zeros(rank, in_width)
        tensors[f"weights.{n}.lora_up"] = torch.zeros(out_rows, rank)
    return tensors


def test_released_sizes_are_detected_and_a_mismatch_is_refused():
    lite = released_lora("lite")
    assert identify_lora(lite) == ("original", "Stage C lite 1B")
    assert identify_lora(released_lora("big"))[1] == "Stage C 3.6B"
    with pytest.raises(LoraError, match=r"for Stage C lite 1B, but the model is Stage C 3\.6B"):
        read_lora(lite, structure.released_shapes("stage_c_big"), "lite_lora.safetensors")

    kohya_lite = {"lora_prior_unet_down_blocks_0_2_attention_attn_to_q.lora_up.weight": torch.zeros(1536, 2),
                  "lora_prior_unet_down_blocks_0_2_attention_attn_to_q.lora_down.weight": torch.zeros(2, 1536)}
    assert identify_lora(kohya_lite) == ("comfyui", "Stage C lite 1B")
    with pytest.raises(LoraError, match=r"for Stage C lite 1B, but the model is Stage C 3\.6B.*\[2048, 2048\]"):
        read_lora(kohya_lite, structure.released_shapes("stage_c_big"), "kohya_lite.safetensors")


def test_custom_size_mismatch_names_both_sides(host_model):
    from stable_cascade_pack.nodes import lora_patches

    wider = small_stage_c(seed=2, c_hidden=[64, 64], nhead=[2, 2], c_cond=64)
    tensors, _ = make_lora_file(wider, "comfyui", seed=4)
    with pytest.raises(LoraError, match=r"wide\.safetensors is a LoRA for a custom Stage C \(attention width 64\), but the model is "
                                        r"a custom Stage C \(4 attention blocks of width 32\)"):
        read_lora(tensors, lora_patches.stage_c_shapes(host_model), "wide.safetensors")


@pytest.mark.parametrize("keys, what", [
    (["lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "lora_unet_output_blocks_2_0_in_layers_2"], "an SD1.x/SD2.x/SDXL UNet"),
    (["lora_unet_down_blocks_2_2_attention_attn_to_q", "lora_unet_effnet_mapper_0"], "Stage B"),
    (["lora_unet_double_blocks_0_img_attn_qkv"], "a Flux-style transformer"),
])
def test_loras_for_other_models_are_refused_by_name(keys, what):
    tensors = {}
    for name in keys:
        tensors[f"{name}.lora_up.weight"], tensors[f"{name}.lora_down.weight"] = torch.zeros(8, 2), torch.zeros(2, 8)
    with pytest.raises(LoraError, match=rf"other\.safetensors is a LoRA for {what}.*not for Stage C"):
        read_lora(tensors, structure.released_shapes("stage_c_big"), "other.safetensors")
    assert what.split()[0] in identify_lora(tensors)[1] or what in identify_lora(tensors)[1]


def test_corrupt_and_foreign_files_get_clear_messages(tmp_path, host_model):
    from stable_cascade_pack.nodes import lora_patches

    shapes = lora_patches.stage_c_shapes(host_model)
    gap = {"weights.0.lora_down": torch.zeros(1, 32), "weights.0.lora_up": torch.zeros(32, 1),
           "weights.2.lora_down": torch.zeros(1, 32), "weights.2.lora_up": torch.zeros(96, 1)}
    with pytest.raises(LoraError, match=r"corrupt: the LoRA list has gaps \(no weights\.1\)"):
        read_lora(gap, shapes, "gap.safetensors")
    with pytest.raises(LoraError, match=r"corrupt: it has weights\.0 without weights\.0\.lora_up"):
        read_lora({"weights.0.lora_down": torch.zeros(1, 32)}, shapes, "half.safetensors")
    with pytest.raises(LoraError, match="is a Stage C .* not a Stable Cascade LoRA"):
        read_lora(host_model.model.diffusion_model.state_dict(), shapes, "stage_c.safetensors")

    path = tmp_path / "truncated.safetensors"
    save_file(released_lora("lite"), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LoraError, match="truncated.safetensors is truncated"):
        load_lora_file(path, shapes)
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(LoraError, match="is corrupt: its safetensors header is not valid JSON"):
        load_lora_file(path, shapes)
    with pytest.raises(LoraError, match="never unpickled"):
        load_lora_file(tmp_path / "old.ckpt", shapes)


@pytest.mark.parametrize("name, size, other", [("lora_stage_c_3.6B_rank4_attn_1newtoken", "Stage C 3.6B", "lite"),
                                               ("lora_stage_c_1B_rank4_attn_1newtoken", "Stage C lite 1B", "big")])
def test_released_key_lists_of_the_original_code_are_recognised(reference_dir, name, size, other):
    """official_state_dict_keys.json lists the original classes' LoRA container at both sizes."""
    import json

    keys = json.loads((reference_dir / "official_state_dict_keys.json").read_text())[name]["keys"]
    assert identify_lora({k: tuple(v) for k, v in keys.items()}) == ("original", size)
    tensors = {k: torch.zeros(v, dtype=torch.int64 if k == "embeddings.indices" else torch.float32) for k, v in keys.items()}
    variant = "big" if "3.6B" in size else "lite"
    lora = read_lora(tensors, structure.released_shapes(f"stage_c_{variant}"))
    assert len(lora.unet) == len([k for k in keys if k.endswith("lora_down")]) * 2  # out_proj 1, in_proj 3 per block pair
    with pytest.raises(LoraError, match=f"for {size}, but the model is"):
        read_lora(tensors, structure.released_shapes(f"stage_c_{other}"))
