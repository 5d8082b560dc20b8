"""Converting attention weights between the original (nn.MultiheadAttention) and the pack layout."""
import torch

from stable_cascade_pack.stages.original_layout import (
    is_original_layout,
    is_pack_layout,
    original_to_pack,
    pack_to_original,
)

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
    converted = original_to_pack(original)
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
    pack = original_to_pack(original)
    assert is_original_layout(original) and not is_pack_layout(original)
    assert is_pack_layout(pack) and not is_original_layout(pack)
    back = pack_to_original(pack)
    assert set(back) == set(original)
    for key, tensor in original.items():
        assert torch.equal(back[key], tensor)


def test_pack_to_original_names_a_missing_projection():
    pack = dict(original_to_pack(original_state_dict()))
    del pack[f"{PREFIX}down_blocks.0.2.attention.attn.to_v.bias"]
    try:
        pack_to_original(pack)
    except KeyError as error:
        assert "to_v.bias" in str(error)
    else:
        raise AssertionError("expected a KeyError naming the missing projection")
