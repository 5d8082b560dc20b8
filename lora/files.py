"""Writing and reading what training produces: the LoRA file and the learned token embeddings.

The LoRA is stored with the host's Stable Cascade LoRA keys (the host's LoraLoader reads them):

    lora_prior_unet_<module name, "." -> "_">.lora_down.weight   [rank, in]
    lora_prior_unet_<module name, "." -> "_">.lora_up.weight     [out, rank]
    lora_prior_unet_<module name, "." -> "_">.alpha              scalar (the host scales by alpha / rank)

plus the training settings in the safetensors metadata (`stable_cascade_training`, JSON) so a run
can resume. A learned token is a textual-inversion file ({"clip_g": [n, 1280]}) that the host's
prompt syntax `embedding:<name>` reads from models/embeddings.
Files are written to a temporary name and renamed, so an interrupted save never leaves half a file.
"""
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HOST_PREFIX = "lora_prior_unet_"
METADATA_KEY = "stable_cascade_training"


def host_key(module_name):
    return HOST_PREFIX + module_name.replace(".", "_")


def lora_state_dict(lora, dtype=torch.float32):
    state = {}
    for name, adapter in lora.items():
        key = host_key(name)
        state[f"{key}.lora_down.weight"] = adapter.down.detach().to("cpu", dtype).contiguous()
        state[f"{key}.lora_up.weight"] = adapter.up.detach().to("cpu", dtype).contiguous()
        state[f"{key}.alpha"] = torch.tensor(adapter.alpha, dtype=dtype)
    return state


def _atomic_save(tensors, path, metadata=None):
    temporary = f"{path}.partial"
    save_file(tensors, temporary, metadata=metadata)
    os.replace(temporary, path)


def save_lora(path, lora, training_info):
    _atomic_save(lora_state_dict(lora), path, {METADATA_KEY: json.dumps(training_info)})


def read_training_info(path):
    """The training settings stored in a LoRA file written by `save_lora` ({} for other files)."""
    with safe_open(path, framework="pt") as handle:
        text = (handle.metadata() or {}).get(METADATA_KEY)
    return json.loads(text) if text else {}


def load_lora_into(path, lora):
    """Puts the weights of a saved LoRA into `lora` (same layers and rank), for resuming."""
    state = load_file(path)
    for name, adapter in lora.items():
        key = host_key(name)
        down, up = state.get(f"{key}.lora_down.weight"), state.get(f"{key}.lora_up.weight")
        if down is None or up is None:
            raise ValueError(f"{os.path.basename(path)} has no LoRA for layer {name}: it was trained on other layers "
                             "(see its 'layers' setting) or another model")
        if down.shape != adapter.down.shape or up.shape != adapter.up.shape:
            raise ValueError(f"{os.path.basename(path)} has rank {down.shape[0]} LoRAs of shape {tuple(up.shape[:1]) + tuple(down.shape[1:])} "
                             f"for {name}; this run has rank {lora.rank} on {tuple(adapter.up.shape[:1]) + tuple(adapter.down.shape[1:])}")
        with torch.no_grad():
            adapter.down.copy_(down)
            adapter.up.copy_(up)


def save_token_embedding(path, vector, text_encoder_key="clip_g"):
    _atomic_save({text_encoder_key: vector.detach().to("cpu", torch.float32).reshape(-1, vector.shape[-1]).contiguous()}, path)


def load_token_embedding(path, text_encoder_key="clip_g"):
    return load_file(path)[text_encoder_key]
