"""Applying a converted Stage C LoRA to the host's MODEL and CLIP (the glue between lora/ and the host).

Weights go through `add_patches` with the host's own LoRAAdapter, so the host merges them when it
loads the model and restores the base weights bit-exactly afterwards. Learned tokens live on a copy
of the CLIP's tokenizer: their ids are swapped for the learned embedding rows when a prompt is
tokenized (the host's own mechanism for textual-inversion vectors), so the text encoder's weights
are never changed and other graphs using the same CLIP see no new tokens.
"""
import copy
import functools
import logging
import numbers

import comfy.lora
import comfy.weight_adapter

from ..lora import LoraError, tokens as token_rows

UNET_PREFIX = "diffusion_model."


def stage_c_shapes(model_patcher):
    """Pack-layout {key: shape} of the Stage C inside a host MODEL (ours or the host's UNETLoader's)."""
    return {key: tuple(tensor.shape) for key, tensor in model_patcher.model.diffusion_model.state_dict().items()}


def _adapter(low_rank):
    return comfy.weight_adapter.LoRAAdapter(set(), (low_rank.up, low_rank.down, low_rank.alpha, None, None, None))


def patch_model(model, lora, strength):
    """A clone of `model` with the LoRA's Stage C patches added at `strength`."""
    patched = model.clone()
    patches = {UNET_PREFIX + key: _adapter(low_rank) for key, low_rank in lora.unet.items()}
    applied = patched.add_patches(patches, strength)
    if len(applied) != len(patches):
        missing = sorted(set(patches) - set(applied))
        raise LoraError(f"the model has no weights {missing[:3]} that the LoRA patches")
    return patched


def patch_clip(clip, lora, strength, given_tokens, source_name):
    """A clone of `clip` with the LoRA's text encoder patches and learned tokens; (clip, notes)."""
    patched = clip.clone()
    notes = []
    if lora.text_encoder:
        key_map = comfy.lora.model_lora_keys_clip(patched.cond_stage_model, {})
        patches = {}
        for name, low_rank in lora.text_encoder.items():
            if name not in key_map:
                raise LoraError(f"{source_name} patches text encoder module {name!r}, which this CLIP does not have "
                                "(Stable Cascade uses CLIP-G).")
            patches[key_map[name]] = _adapter(low_rank)
        patched.add_patches(patches, strength)
        notes.append(f"{len(patches)} text encoder weights patched")
    if lora.tokens is not None or lora.embeddings:
        notes.append(_add_tokens(patched, lora, strength, given_tokens, source_name))
    return patched, notes


def _add_tokens(clip, lora, strength, given_tokens, source_name):
    embedding_weight = clip.cond_stage_model.clip_g.transformer.get_input_embeddings().weight
    outer = copy.copy(clip.tokenizer)
    inner_name = getattr(outer, "clip", "clip_g")
    inner = copy.deepcopy(getattr(clip.tokenizer, inner_name))
    rows = dict(getattr(inner, "learned_token_rows", {}))
    words = []

    if lora.tokens is not None:
        vocab_size = embedding_weight.shape[0]
        new = token_rows.check_new_tokens(lora.tokens.indices, vocab_size, given_tokens, source_name)
        vocab = inner.tokenizer.get_vocab()
        base_vocab = {s: i for s, i in vocab.items() if i < vocab_size}
        init_rows = token_rows.new_token_rows(base_vocab, embedding_weight.detach(), [p for _, p in new])
        # Existing rows may already carry another LoRA's delta: learned deltas add up.
        base = embedding_weight.detach().float().clone()
        for token_id, row in rows.items():
            if token_id < vocab_size and row.dim() == 1:
                base[token_id] = row
        learned = token_rows.learned_rows(base, init_rows, lora.tokens.indices, lora.tokens.rows * strength)
        file_to_actual = {vocab_size + i: _add_word(inner, token, source_name) for i, (token, _) in enumerate(new)}
        for token_id, row in learned.items():
            rows[file_to_actual.get(token_id, token_id)] = row
        words += [token for token, _ in new]
    for name, vectors in lora.embeddings.items():
        rows[_add_word(inner, name, source_name)] = vectors.float()
        words.append(name)

    inner.learned_token_rows = rows
    inner.tokenize_with_weights = functools.partial(_tokenize_with_learned_rows, inner)
    setattr(outer, inner_name, inner)
    clip.tokenizer = outer
    existing = sum(1 for i in lora.tokens.indices if i < embedding_weight.shape[0]) if lora.tokens else 0
    return f"tokens usable in prompts: {', '.join(words) or 'none new'}" + (f"; {existing} existing token rows changed" if existing else "")


def _add_word(inner, word, source_name):
    hf_tokenizer = inner.tokenizer
    if word in hf_tokenizer.get_vocab():
        raise LoraError(f"{source_name}: the token {word!r} is already in the vocabulary; pick the name the LoRA was trained with.")
    hf_tokenizer.add_tokens([word])
    return hf_tokenizer.convert_tokens_to_ids(word)


def _tokenize_with_learned_rows(inner, text, return_word_ids=False, **kwargs):
    """The host tokenizer's output with every learned token id replaced by its embedding row(s)."""
    batches = type(inner).tokenize_with_weights(inner, text, return_word_ids, **kwargs)
    rows = inner.learned_token_rows
    result = []
    for batch in batches:
        out, grew = [], 0
        for entry in batch:
            token, rest = entry[0], entry[1:]
            row = rows.get(int(token)) if isinstance(token, numbers.Integral) else None
            if row is None:
                out.append(entry)
            elif row.dim() == 1:
                out.append((row, *rest))
            else:  # a multi-vector embedding takes one position per vector
                out.extend((vector, *rest) for vector in row)
                grew += row.shape[0] - 1
        while grew > 0 and len(out) > 1 and isinstance(out[-1][0], numbers.Integral) and out[-1][0] == inner.pad_token:
            out.pop()
            grew -= 1
        if grew > 0:
            logging.warning("a multi-vector learned embedding made the prompt %d tokens longer than the text encoder's window", grew)
        result.append(out)
    return result
