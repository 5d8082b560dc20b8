"""The original training code's LoRA (fixtures/lora, README §4) through our reader and the host's patcher.

Every size, index and scale comes from the fixture files; the merged weights and outputs are the
original code's own (`remove_lora` and the parametrized forward)."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.lora import identify_lora, read_lora, structure
from stable_cascade_pack.lora.tokens import learned_rows, new_token_ids, prepare_train_tokens
from stable_cascade_pack.stages.checkpoint import extract


@pytest.fixture(scope="module")
def lora_fixture(fixtures_dir):
    folder = fixtures_dir / "lora"
    meta = json.loads((folder / "lora.json").read_text())
    index_to_module = json.loads((folder / "index_to_module.json").read_text())
    base, _ = extract(load_file(str(folder / "base.state_dict.safetensors")), want="stage_c")
    config = meta["stage_c_kwargs"]  # nhead is not in the weights
    merged, _ = extract(load_file(str(folder / "merged.state_dict.safetensors")), want="stage_c")
    return dict(meta=meta, index_to_module=index_to_module, base=base, merged=merged, config=config,
                lora=load_file(str(folder / "lora.safetensors")), io=load_file(str(folder / "io.safetensors")))


def shapes_of(state_dict):
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def test_container_order_is_the_fixture_index_map(lora_fixture):
    order = structure.original_lora_order(shapes_of(lora_fixture["base"]))
    mapping = lora_fixture["index_to_module"]
    assert len(order) == len(mapping) == lora_fixture["meta"]["num_lora"]
    for n, (part, prefix) in enumerate(order):
        expected = mapping[str(n)]["state_dict_key"]
        ours = prefix + ("out_proj.weight" if part == "out_proj" else "in_proj_weight")
        assert ours == expected


def test_the_3_6b_order_is_the_documented_one():
    order = structure.original_lora_order(structure.released_shapes("stage_c_big"))
    assert len(order) == 128
    assert order[1] == ("in_proj", "down_blocks.0.2.attention.attn.")
    assert order[2] == ("out_proj", "down_blocks.0.5.attention.attn.")
    assert order[127] == ("in_proj", "up_blocks.1.23.attention.attn.")
    assert len(structure.original_lora_order(structure.released_shapes("stage_c_lite"))) == 64


def test_reader_reproduces_the_merged_weights(lora_fixture):
    base, merged = lora_fixture["base"], lora_fixture["merged"]
    lora = read_lora(lora_fixture["lora"], shapes_of(base), "lora.safetensors")
    assert lora.format == "original"
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert set(lora.unet) == changed  # to_q/to_k/to_v of each in_proj_weight, and out_proj
    expected_scale = lora_fixture["meta"]["scale"]
    for key, low_rank in lora.unet.items():
        assert low_rank.scale == expected_scale
        torch.testing.assert_close(base[key] + low_rank.delta(base[key].shape), merged[key], rtol=0, atol=1e-6)


def test_identified_from_shapes_alone(lora_fixture):
    shapes = shapes_of(lora_fixture["lora"])
    fmt, trained_for = identify_lora(shapes)
    widths = {tuple(v)[1] for k, v in shapes.items() if k.endswith("lora_down")}
    assert fmt == "original"
    assert trained_for == f"a custom Stage C ({len(lora_fixture['index_to_module']) // 2} attention blocks of width {widths.pop()})"


def test_learned_tokens_reproduce_the_retoken_weight(lora_fixture):
    """The stand-in vocabulary of the fixture: rows listed in lora.json; the new row is appended at V."""
    tokens_meta, io = lora_fixture["meta"]["tokens"], lora_fixture["io"]
    weight = io["tokens.weight_orig"]
    vocab_size = tokens_meta["vocab"]
    # A vocabulary whose entries matching the init pattern are exactly the fixture's aggregated rows.
    vocab = {(f"dog{i}</w>" if i in tokens_meta["new_token_aggr_rows"] else f"cat{i}</w>"): i for i in range(vocab_size)}
    new, init_rows, selected = prepare_train_tokens(vocab, weight, [("[fernando]", "^dog"), (f"^cat{tokens_meta['existing_rows'][0]}<", None)])
    assert new == ["[fernando]"]
    torch.testing.assert_close(torch.cat([weight, init_rows]), io["tokens.weight_before"], rtol=0, atol=0)
    assert selected == tokens_meta["retoken_indices_in_order"]  # the original's set order

    lora = read_lora(lora_fixture["lora"], shapes_of(lora_fixture["base"]))
    assert lora.tokens.indices == tokens_meta["retoken_indices_in_order"]
    assert new_token_ids(lora.tokens.indices, vocab_size) == [tokens_meta["new_token_row"]]
    rows = learned_rows(weight, init_rows, lora.tokens.indices, lora.tokens.rows)
    after = io["tokens.weight_after"]
    for index, row in rows.items():
        torch.testing.assert_close(row, after[index], rtol=0, atol=1e-7)
    untouched = [i for i in range(vocab_size) if i not in rows]
    assert torch.equal(after[untouched], weight[untouched])


def test_host_patcher_reproduces_outputs_and_unpatches_bit_exactly(lora_fixture, host_modules):
    from stable_cascade_pack.nodes import host_models, lora_patches

    base, io = lora_fixture["base"], lora_fixture["io"]
    model = host_models.build_diffusion_model("c", {k: v.clone() for k, v in base.items()}, lora_fixture["config"], weight_dtype=torch.float32)
    lora = read_lora(lora_fixture["lora"], lora_patches.stage_c_shapes(model))
    patched = lora_patches.patch_model(model, lora, 1.0)
    network = patched.model.diffusion_model
    inputs = (io["x"], io["r"], io["clip_text"], io["clip_text_pooled"], io["clip_img"])

    patched.patch_model()
    with torch.no_grad():
        out_lora = network(*inputs)
    weights = {k: v.clone() for k, v in network.state_dict().items()}
    patched.unpatch_model()
    with torch.no_grad():
        out_base = network(*inputs)

    assert not network.training
    torch.testing.assert_close(out_base, io["out_base"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_lora, io["out_lora"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_base, io["out_base"], rtol=1e-4, atol=1e-5)
    for key, value in lora_fixture["merged"].items():
        torch.testing.assert_close(weights[key], value, rtol=0, atol=1e-6)
    for key, value in network.state_dict().items():
        assert torch.equal(value, base[key]), key  # bit-exact after unpatching
