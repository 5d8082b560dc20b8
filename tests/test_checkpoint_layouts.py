"""The one key map between the original (nn.MultiheadAttention), host/pack and diffusers layouts."""
import pytest
import torch

from stable_cascade_pack.stages.checkpoint.layouts import KeyPart, convert_key, convert_state_dict, unet_layout

PREFIX = "model.diffusion_model."


def original_state_dict(c=8):
    g = torch.Generator().manual_seed(0)
    return {
        f"{PREFIX}down_blocks.0.2.attention.attn.in_proj_weight": torch.randn(3 * c, c, generator=g),
        f"{PREFIX}down_blocks.0.2.attention.attn.in_proj_bias": torch.randn(3 * c, generator=g),
        f"{PREFIX}down_blocks.0.2.attention.attn.out_proj.weight": torch.randn(c, c, generator=g),
        f"{PREFIX}down_blocks.0.2.attention.attn.out_proj.bias": torch.randn(c, generator=g),
        f"{PREFIX}down_blocks.0.2.kv_mapper.1.weight": torch.randn(c, 4, generator=g),
        f"{PREFIX}clf.1.weight": torch.randn(16, c, 1, 1, generator=g),
    }


def test_original_to_pack_splits_into_views_without_copying():
    original = original_state_dict()
    packed_weight = original[f"{PREFIX}down_blocks.0.2.attention.attn.in_proj_weight"]
    converted = convert_state_dict(original, "original", "pack")
    base = f"{PREFIX}down_blocks.0.2.attention.attn."
    assert set(converted) == {
        *(f"{base}{p}.{t}" for p in ("to_q", "to_k", "to_v", "out_proj") for t in ("weight", "bias")),
        f"{PREFIX}down_blocks.0.2.kv_mapper.1.weight", f"{PREFIX}clf.1.weight",
    }
    for index, projection in enumerate(("to_q", "to_k", "to_v")):
        split = converted[f"{base}{projection}.weight"]
        assert split.untyped_storage().data_ptr() == packed_weight.untyped_storage().data_ptr()
        assert torch.equal(split, packed_weight[index * 8:(index + 1) * 8])
    assert converted[f"{PREFIX}clf.1.weight"] is original[f"{PREFIX}clf.1.weight"]


def test_round_trip_and_detection():
    original = original_state_dict()
    pack = convert_state_dict(original, "original", "pack")
    assert unet_layout(original) == "original"
    assert unet_layout(pack) == "host"
    back = convert_state_dict(pack, "pack", "original")
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor)


def test_pack_to_original_names_a_missing_projection():
    pack = dict(convert_state_dict(original_state_dict(), "original", "pack"))
    del pack[f"{PREFIX}down_blocks.0.2.attention.attn.to_v.bias"]
    try:
        convert_state_dict(pack, "pack", "original")
    except KeyError as error:
        assert "to_v" in str(error) and "in_proj_bias" in str(error)
    else:
        raise AssertionError("expected a KeyError naming the missing projection")


def test_convert_key_between_every_pair_of_layouts():
    attn = "down_blocks.1.0.attention"
    names = {
        "original": [f"{attn}.attn.in_proj_weight"],
        "pack": [f"{attn}.attn.{p}.weight" for p in ("to_q", "to_k", "to_v")],
        "diffusers": [f"{attn}.{p}.weight" for p in ("to_q", "to_k", "to_v")],
    }
    names["host"] = names["pack"]
    for source in names:
        for target in names:
            for index, key in enumerate(names[source]):
                parts = convert_key(key, source, target, "stage_c")
                if source == "original" and target != "original":
                    assert parts == [KeyPart(k, third) for third, k in enumerate(names[target])]
                elif target == "original" and source != "original":
                    assert parts == [KeyPart(names["original"][0], index)]
                else:
                    assert parts == [KeyPart(names[target][index])]
    out = {"original": f"{attn}.attn.out_proj.bias", "pack": f"{attn}.attn.out_proj.bias",
           "diffusers": f"{attn}.to_out.0.bias"}
    for source in out:
        for target in out:
            assert convert_key(out[source], source, target) == [KeyPart(out[target])]


def test_stage_b_clip_mapper_is_renamed_for_diffusers_only():
    assert convert_key("clip_mapper.weight", "pack", "diffusers", "stage_b") == [KeyPart("clip_txt_pooled_mapper.weight")]
    assert convert_key("clip_txt_pooled_mapper.weight", "diffusers", "original", "stage_b") == [KeyPart("clip_mapper.weight")]
    assert convert_key("clip_txt_pooled_mapper.weight", "diffusers", "pack", "stage_c") == [KeyPart("clip_txt_pooled_mapper.weight")]


def test_unknown_layout_is_named():
    with pytest.raises(ValueError, match="kohya"):
        convert_key("clf.1.weight", "kohya", "pack")
