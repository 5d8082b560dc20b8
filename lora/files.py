"""Writing and reading what training produces: the LoRA file and the learned token embeddings.

The LoRA goes through the pack's LoRA formats (lora/save.py): ComfyUI's Stage C keys, which the
host's LoraLoader and our Load Stage C LoRA read,

    lora_prior_unet_<module>.lora_down.weight / .lora_up.weight / .alpha   (scale = alpha / rank)

plus the training settings in the safetensors metadata (`stable_cascade_training`, JSON) so a run
can resume. A learned token is a textual-inversion file ({"clip_g": [n, 1280]}), the host's own
embedding format, which prompts use as `embedding:<name>`.
Files are written to a temporary name and renamed, so an interrupted save never leaves half a file.
"""
import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .adapters import LowRank, StageCLora
from .save import save_lora as save_tensors
from .save import to_comfyui_keys

METADATA_KEY = "stable_cascade_training"


def as_stage_c_lora(lora_set, trained_for="Stage C (trained here)"):
    """The trained LoRASet as the pack's LoRA object: {pack weight key: LowRank} (float32, CPU)."""
    unet = {f"{name}.weight": LowRank(adapter.up.detach().float().cpu(), adapter.down.detach().float().cpu(), adapter.alpha)
            for name, adapter in lora_set.items()}
    return StageCLora(format="comfyui", trained_for=trained_for, unet=unet)


def save_lora(path, lora_set, training_info):
    temporary = f"{path}.partial"
    save_tensors(temporary, to_comfyui_keys(as_stage_c_lora(lora_set)), metadata={METADATA_KEY: json.dumps(training_info)})
    os.replace(temporary, path)


def read_training_info(path):
    """The training settings stored in a LoRA file written by `save_lora` ({} for other files)."""
    with safe_open(str(path), framework="pt") as handle:
        text = (handle.metadata() or {}).get(METADATA_KEY)
    return json.loads(text) if text else {}


def load_lora_into(stage_c_lora, lora_set, name="the saved LoRA"):
    """Puts a read LoRA (lora.read_lora / load_lora_file) into `lora_set` (same layers and rank), for resuming."""
    with torch.no_grad():
        for layer, adapter in lora_set.items():
            saved = stage_c_lora.unet.get(f"{layer}.weight")
            if saved is None:
                raise ValueError(f"{name} has no LoRA for layer {layer}: it was trained on other layers "
                                 "(see its 'layers' setting) or another model")
            if saved.down.shape != adapter.down.shape or saved.up.shape != adapter.up.shape:
                raise ValueError(f"{name} has rank {saved.rank} on {layer}; this run has rank {lora_set.rank}")
            adapter.down.copy_(saved.down)
            adapter.up.copy_(saved.up * (saved.scale / adapter.scale))  # same delta whatever alpha it was saved with


def save_token_embedding(path, vector, text_encoder_key="clip_g"):
    temporary = f"{path}.partial"
    save_file({text_encoder_key: vector.detach().to("cpu", torch.float32).reshape(-1, vector.shape[-1]).contiguous()},
              temporary)
    os.replace(temporary, path)


def load_token_embedding(path, text_encoder_key="clip_g"):
    return load_file(str(path))[text_encoder_key]
