"""The host's CLIP (type stable_cascade) as the trainer's text encoder, new tokens included.

A caption without new tokens is encoded once, without gradients, and cached. A caption with new
tokens is encoded at every use with gradients flowing into the token vectors: each new token is
handed to the host's tokenizer as the embedding `embedding:<name>` (the host's own textual-inversion
path), whose vector is the live, trainable one.
"""
import contextlib
import copy

import torch

from ..lora.token_spec import prompt_with_embeddings
from ..lora.tokens import init_row

TEXT_LENGTH = 77  # CLIP's context; longer captions are cut as the original's tokenizer does


def _inner(container):
    """The CLIP-G part of the host's tokenizer / text model (attribute named by `.clip`, e.g. clip_g)."""
    return getattr(container, container.clip)


def vocabulary(clip):
    return _inner(clip.tokenizer).tokenizer.get_vocab()


def token_embedding_table(clip):
    return _inner(clip.cond_stage_model).transformer.get_input_embeddings().weight


def token_clashes(clip, new_tokens):
    """Messages for new tokens the vocabulary already has."""
    vocab = vocabulary(clip)
    return [f"new token {t.token!r} is already a word of the CLIP vocabulary; pick another token"
            for t in new_tokens if t.token.lower() in vocab or f"{t.token.lower()}</w>" in vocab]


def initial_vectors(clip, new_tokens):
    """{name: [width]}: the mean embedding of the vocabulary entries matching each init pattern (else zeros)."""
    vocab = vocabulary(clip)
    table = token_embedding_table(clip)
    return {token.name: init_row(vocab, table, token.init_pattern).detach().float().cpu() for token in new_tokens}


class CaptionEncoder:
    """encode(captions, token_vectors) -> {"clip_text": [B,77,W], "clip_text_pooled": [B,1,W]} (float32, CPU)."""

    def __init__(self, clip, new_tokens):
        self.clip = clip
        self.new_tokens = list(new_tokens)
        self.cache = {}

    def uses_new_tokens(self, caption):
        return any(t.token in caption for t in self.new_tokens)

    def __call__(self, captions, token_vectors):
        encoded = [self.encode(caption, token_vectors) for caption in captions]
        return {"clip_text": torch.cat([text for text, _ in encoded]),
                "clip_text_pooled": torch.cat([pooled for _, pooled in encoded])}

    def encode(self, caption, token_vectors):
        if not self.uses_new_tokens(caption) or not token_vectors:
            if caption not in self.cache:
                with torch.no_grad():
                    self.cache[caption] = self._encode(self.clip.tokenize(caption))
            return self.cache[caption]
        tokens = self._tokenizer_with(token_vectors).tokenize_with_weights(prompt_with_embeddings(caption, self.new_tokens))
        with out_of_place_residuals(self.clip.cond_stage_model):
            return self._encode(tokens)

    def _encode(self, tokens):
        text, pooled = self.clip.encode_from_tokens(tokens, return_pooled=True)
        return text[:, :TEXT_LENGTH].float().cpu(), pooled.reshape(pooled.shape[0], 1, -1).float().cpu()

    def _tokenizer_with(self, token_vectors):
        """A copy of the host's tokenizer whose `embedding:<name>` lookups return the live vectors."""
        tokenizer = copy.copy(self.clip.tokenizer)
        inner = copy.copy(_inner(tokenizer))
        setattr(tokenizer, tokenizer.clip, inner)
        host_lookup = inner._try_get_embedding

        def lookup(embedding_name):
            words = embedding_name.split()
            name = words[0] if words else embedding_name
            leftover = " ".join(words[1:])
            stripped = name.rstrip(",.;:!?")
            if stripped in token_vectors:
                rest = name[len(stripped):]
                return token_vectors[stripped], (f"{rest} {leftover}".strip() if rest else leftover)
            return host_lookup(embedding_name)

        inner._try_get_embedding = lookup
        if inner.embedding_directory is None:
            inner.embedding_directory = []  # the host only looks embeddings up when a directory is set
        return tokenizer


@contextlib.contextmanager
def out_of_place_residuals(text_model):
    """The host's CLIP layers add their residuals in place (`x += ...`), which autograd refuses once
    LayerNorm has saved x for the backward pass. Within the block each layer computes the same sums
    out of place; afterwards the host's own forward is back."""
    layers = [m for m in text_model.modules()
              if all(hasattr(m, name) for name in ("layer_norm1", "self_attn", "layer_norm2", "mlp"))]

    def out_of_place(layer):
        def forward(x, mask=None, optimized_attention=None):
            x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
            return x + layer.mlp(layer.layer_norm2(x))
        return forward

    try:
        for layer in layers:
            layer.forward = out_of_place(layer)
        yield
    finally:
        for layer in layers:
            del layer.forward
