"""OneTrainer's legacy Stage C layout.

The UNet keys carry the `lora_prior_unet_` prefix, but name the attention the diffusers way
(`attention_to_q` / `attention_attn_to_q`, `..._to_out` or `..._to_out_0` for out_proj), and
learned embeddings travel in the same file as `bundle_emb.<name>.clip_g` [n_vectors, 1280].
"""
import re

from .named_modules import group, load_named

_LEGACY_ATTENTION = re.compile(r"_attention_(attn_)?to_(q|k|v|out)(_0)?$")


def claims(keys):
    keys = list(keys)
    return any(k.startswith("bundle_emb.") for k in keys) or any(
        m.startswith("lora_prior_unet_") and _is_legacy(m) for m in group(keys))


def _is_legacy(name):
    match = _LEGACY_ATTENTION.search(name)
    return bool(match) and (match[1] is None or match[2] == "out")


def to_pack_name(name):
    """'down_blocks_0_2_attention_to_out_0' -> 'down_blocks_0_2_attention_attn_out_proj'."""
    def replace(match):
        projection = "out_proj" if match[2] == "out" else f"to_{match[2]}"
        return f"_attention_attn_{projection}"
    return _LEGACY_ATTENTION.sub(replace, name)


def load(state_dict, target_shapes, source_name="LoRA"):
    if not claims(state_dict):
        return None
    lora = load_named({k: v for k, v in state_dict.items() if not k.startswith("bundle_emb.")},
                      target_shapes, source_name, "onetrainer", rename=to_pack_name)
    for key, vectors in state_dict.items():
        if key.startswith("bundle_emb.") and key.endswith(".clip_g"):
            name = key[len("bundle_emb."): -len(".clip_g")]
            lora.embeddings[name] = vectors if vectors.dim() == 2 else vectors.reshape(-1, vectors.shape[-1])
    return lora
