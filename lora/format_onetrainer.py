"""OneTrainer's legacy Stage C layout.

The UNet keys carry the `lora_prior_unet_` prefix, but name the attention the diffusers way
(`attention_to_q`, `attention_to_out_0`; some versions `attention_attn_to_out`), and learned
embeddings travel in the same file as `bundle_emb.<name>.clip_g` [n_vectors, 1280].
"""
import re

from ..stages.checkpoint.layouts import convert_key
from .named_modules import group, load_named

_ATTENTION = re.compile(r"^((?:down|up)_blocks)_(\d+)_(\d+)_attention_(attn_)?(to_q|to_k|to_v|to_out(?:_0)?)$")


def claims(keys):
    keys = list(keys)
    return any(k.startswith("bundle_emb.") for k in keys) or any(
        m.startswith("lora_prior_unet_") and _is_legacy(m[len("lora_prior_unet_"):]) for m in group(keys))


def _is_legacy(name):
    match = _ATTENTION.match(name)
    return bool(match) and (match[4] is None or match[5].startswith("to_out"))


def to_pack_name(name):
    """'down_blocks_0_2_attention_to_out_0' -> 'down_blocks_0_2_attention_attn_out_proj' (the loaders' key map)."""
    match = _ATTENTION.match(name)
    if not match:
        return name
    projection = "to_out.0" if match[5].startswith("to_out") else match[5]
    (part,) = convert_key(f"{match[1]}.{match[2]}.{match[3]}.attention.{projection}.weight", "diffusers", "pack", "stage_c")
    return part.key.removesuffix(".weight").replace(".", "_")


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
