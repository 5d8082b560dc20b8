"""Learned tokens on a small seeded CLIP-G built by the host's own classes (comfy.sd.CLIP).

Oracle: what the original code does (official.md §7.3) — a tokenizer with the token added and a
token-embedding matrix with the new row (mean of the init matches) appended and the learned deltas
added — built here by hand on a second CLIP with the same weights."""
import copy
import json
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import seeded_random

from stable_cascade_pack.lora import LoraError, read_lora, structure

WIDTH = 64
PROMPT = "a photo of [fernando] wearing a snail hat"
INIT_PATTERN = "^dog</w>"


@pytest.fixture(scope="module")
def small_clip_factory(host_modules, tmp_path_factory):
    import comfy.sd
    import comfy.sd1_clip as sd1_clip
    import comfy.sdxl_clip as sdxl_clip

    config = json.loads((host_modules / "comfy" / "clip_config_bigg.json").read_text())
    config.update(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_attention_heads=2, num_hidden_layers=2, projection_dim=WIDTH)
    config_path = tmp_path_factory.mktemp("clip") / "small_clip_g.json"
    config_path.write_text(json.dumps(config))

    class SmallClipG(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, layer="hidden", layer_idx=-1, textmodel_json_config=str(config_path), dtype=dtype,
                             special_tokens={"start": 49406, "end": 49407, "pad": 49407}, layer_norm_hidden_state=False,
                             enable_attention_masks=True, return_projected_pooled=True,
                             model_options={**model_options, "model_name": "clip_g"})

    class SmallClip(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype, clip_name="g", clip_model=SmallClipG, model_options=model_options)

    def make(seed=3):
        target = SimpleNamespace(params={}, clip=SmallClip, tokenizer=sdxl_clip.StableCascadeTokenizer)
        clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32})
        seeded_random(clip.cond_stage_model, seed, std=0.02)
        return clip

    return make


def encode(clip, text):
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return cond, pooled


def original_format_lora(vocab_size, existing_id, seed=7):
    generator = torch.Generator().manual_seed(seed)
    return {"embeddings.embeddings": torch.randn(2, WIDTH, generator=generator) * 0.05,
            "embeddings.indices": torch.tensor([vocab_size, existing_id], dtype=torch.int64)}


def oracle_clip(clip, token, extra_rows_by_id):
    """The original's result: tokenizer + extended embedding matrix (a deep copy; `clip` untouched)."""
    oracle = copy.copy(clip)
    oracle.cond_stage_model = copy.deepcopy(clip.cond_stage_model)
    oracle.tokenizer = copy.deepcopy(clip.tokenizer)
    oracle.tokenizer.clip_g.tokenizer.add_tokens([token])
    import comfy.model_patcher
    oracle.patcher = comfy.model_patcher.ModelPatcher(oracle.cond_stage_model, load_device=clip.patcher.load_device,
                                                      offload_device=clip.patcher.offload_device)
    embedding = oracle.cond_stage_model.clip_g.transformer.get_input_embeddings()
    weight = embedding.weight.detach().clone()
    new_rows = torch.zeros(max(extra_rows_by_id) + 1 - weight.shape[0], weight.shape[1])
    weight = torch.cat([weight, new_rows])
    for token_id, row in extra_rows_by_id.items():
        weight[token_id] = row
    embedding.weight = torch.nn.Parameter(weight, requires_grad=False)
    return oracle


def test_new_and_existing_tokens_match_the_original_extended_embedding(small_clip_factory):
    from stable_cascade_pack.nodes import lora_patches

    clip = small_clip_factory()
    before_cond, before_pooled = encode(clip, PROMPT)
    hf = clip.tokenizer.clip_g.tokenizer
    vocab = hf.get_vocab()
    weight = clip.cond_stage_model.clip_g.transformer.get_input_embeddings().weight.detach().float()
    vocab_size = weight.shape[0]
    snail = vocab["snail</w>"]
    state_dict = original_format_lora(vocab_size, snail)
    lora = read_lora(state_dict, structure.released_shapes("stage_c_lite"), "tokens.safetensors")

    patched, notes = lora_patches.patch_clip(clip, lora, 1.0, [("[fernando]", INIT_PATTERN)], "tokens.safetensors")
    assert "[fernando]" in notes[-1]

    dog_ids = [i for s, i in vocab.items() if re.search(INIT_PATTERN, s)]
    assert dog_ids, "the init pattern must match something in the real vocabulary"
    deltas = state_dict["embeddings.embeddings"]
    expected_rows = {vocab_size: weight[dog_ids].mean(0) + deltas[0], snail: weight[snail] + deltas[1]}
    oracle = oracle_clip(clip, "[fernando]", expected_rows)

    cond, pooled = encode(patched, PROMPT)
    oracle_cond, oracle_pooled = encode(oracle, PROMPT)
    torch.testing.assert_close(cond, oracle_cond, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled, oracle_pooled, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cond, before_cond, atol=1e-4)

    # The CLIP that went in is untouched: same tokenizer, same encoding (other graphs unaffected).
    again_cond, again_pooled = encode(clip, PROMPT)
    assert torch.equal(again_cond, before_cond) and torch.equal(again_pooled, before_pooled)
    assert "[fernando]" not in clip.tokenizer.clip_g.tokenizer.get_vocab()


def test_strength_zero_keeps_existing_rows_and_the_mean_init(small_clip_factory):
    from stable_cascade_pack.nodes import lora_patches

    clip = small_clip_factory()
    weight = clip.cond_stage_model.clip_g.transformer.get_input_embeddings().weight.detach().float()
    vocab = clip.tokenizer.clip_g.tokenizer.get_vocab()
    lora = read_lora(original_format_lora(weight.shape[0], vocab["snail</w>"]), structure.released_shapes("stage_c_lite"))
    patched, _ = lora_patches.patch_clip(clip, lora, 0.0, [("[fernando]", INIT_PATTERN)], "tokens.safetensors")
    tokens = patched.tokenize("snail [fernando]")["g"][0]
    dog_ids = [i for s, i in vocab.items() if re.search(INIT_PATTERN, s)]
    assert torch.equal(tokens[1][0], weight[vocab["snail</w>"]])
    torch.testing.assert_close(tokens[2][0], weight[dog_ids].mean(0), rtol=0, atol=0)


def test_missing_token_strings_are_named(small_clip_factory):
    from stable_cascade_pack.nodes import lora_patches

    clip = small_clip_factory()
    vocab_size = clip.cond_stage_model.clip_g.transformer.get_input_embeddings().weight.shape[0]
    lora = read_lora(original_format_lora(vocab_size, 5), structure.released_shapes("stage_c_lite"))
    with pytest.raises(LoraError, match=rf"learned 1 new token\(s\) \(ids \[{vocab_size}\]\) but 0 were given.*\[mytoken\] \^dog</w>"):
        lora_patches.patch_clip(clip, lora, 1.0, [], "tokens.safetensors")


def test_onetrainer_bundled_embedding_becomes_a_prompt_word(small_clip_factory):
    from stable_cascade_pack.nodes import lora_patches

    clip = small_clip_factory()
    vectors = torch.randn(1, WIDTH, generator=torch.Generator().manual_seed(9))
    lora = read_lora({"bundle_emb.mystyle.clip_g": vectors}, structure.released_shapes("stage_c_lite"), "ot.safetensors")
    assert lora.format == "onetrainer" and set(lora.embeddings) == {"mystyle"}
    patched, _ = lora_patches.patch_clip(clip, lora, 1.0, [], "ot.safetensors")
    tokens = patched.tokenize("a mystyle cat")["g"][0]
    assert torch.equal(tokens[2][0], vectors[0])
    oracle = oracle_clip(clip, "mystyle", {clip.cond_stage_model.clip_g.transformer.get_input_embeddings().weight.shape[0]: vectors[0]})
    torch.testing.assert_close(encode(patched, "a mystyle cat")[0], encode(oracle, "a mystyle cat")[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("prefix", ["lora_prior_te_", "lora_te_"])
def test_text_encoder_lora_patches_equal_w_plus_scale_up_down(small_clip_factory, prefix):
    from stable_cascade_pack.nodes import lora_patches

    clip = small_clip_factory()
    generator = torch.Generator().manual_seed(13)
    module = "text_model_encoder_layers_1_mlp_fc1"
    key = "clip_g.transformer.text_model.encoder.layers.1.mlp.fc1.weight"
    base = clip.cond_stage_model.state_dict()[key].clone()
    up, down = torch.randn(base.shape[0], 2, generator=generator), torch.randn(2, base.shape[1], generator=generator)
    tensors = {f"{prefix}{module}.lora_up.weight": up, f"{prefix}{module}.lora_down.weight": down,
               f"{prefix}{module}.alpha": torch.tensor(1.0)}
    lora = read_lora(tensors, structure.released_shapes("stage_c_lite"), "te.safetensors")
    patched, notes = lora_patches.patch_clip(clip, lora, 0.5, [], "te.safetensors")
    assert notes == ["1 text encoder weights patched"]
    import comfy.model_management as mm

    mm.load_models_gpu([patched.patcher])  # as the host does before encoding: the CLIP's model is shared
    weight = patched.cond_stage_model.state_dict()[key].clone()
    mm.load_models_gpu([clip.patcher])
    torch.testing.assert_close(weight, base + 0.5 * 0.5 * (up @ down), rtol=1e-5, atol=1e-6)
    assert torch.equal(clip.cond_stage_model.state_dict()[key], base)


def test_two_chained_loras_each_bring_their_own_new_token(small_clip_factory):
    """Both files store their new token as id V (each was trained alone): both must stay usable."""
    from stable_cascade_pack.nodes import lora_patches

    clip = small_clip_factory()
    weight = clip.cond_stage_model.clip_g.transformer.get_input_embeddings().weight.detach().float()
    vocab = clip.tokenizer.clip_g.tokenizer.get_vocab()
    first_file, second_file = original_format_lora(weight.shape[0], 5, seed=1), original_format_lora(weight.shape[0], 5, seed=2)
    first = read_lora(first_file, structure.released_shapes("stage_c_lite"))
    second = read_lora(second_file, structure.released_shapes("stage_c_lite"))
    once, _ = lora_patches.patch_clip(clip, first, 1.0, [("[alpha]", "^cat</w>")], "first.safetensors")
    twice, _ = lora_patches.patch_clip(once, second, 1.0, [("<beta>", None)], "second.safetensors")
    tokens = twice.tokenize("[alpha] <beta> x")["g"][0]
    cat = [i for s, i in vocab.items() if re.search("^cat</w>", s)]
    torch.testing.assert_close(tokens[1][0], weight[cat].mean(0) + first_file["embeddings.embeddings"][0], rtol=0, atol=1e-7)
    torch.testing.assert_close(tokens[2][0], second_file["embeddings.embeddings"][0], rtol=0, atol=0)  # no init pattern: zeros
    # The existing row 5 got both deltas, each LoRA adding its own.
    expected_5 = weight[5] + first_file["embeddings.embeddings"][1] + second_file["embeddings.embeddings"][1]
    assert sum(isinstance(t[0], torch.Tensor) for t in tokens) == 2
    assert "<beta>" not in once.tokenizer.clip_g.tokenizer.get_vocab()
    assert torch.allclose(twice.tokenizer.clip_g.learned_token_rows[5], expected_5, atol=1e-7)
