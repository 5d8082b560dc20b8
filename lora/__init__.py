"""LoRA and learned-token formats for Stage C, and their conversion to the host's weight patches.

Pure PyTorch; nothing here imports the host. The pieces:

    read_lora(state_dict, stage_c_shapes, name)    -> StageCLora (every format, tried in order)
    load_lora_file(path, stage_c_shapes)           -> the same from a .safetensors file
    identify_lora(header_shapes)                   -> (format, trained for) or None, no weights read
    StageCLora.unet: {pack weight key: LowRank(up, down, alpha)}   (the host's LoRAAdapter convention)
    tokens.prepare_train_tokens / learned_rows     -> the original's new-token rows (training reuses them)
    save.to_comfyui_keys / to_original_keys / save_lora

`stage_c_shapes` is the pack-layout {key: shape} of the Stage C being patched
(structure.released_shapes('stage_c_big') for the release).
"""
from .adapters import FORMAT_NAMES, LowRank, StageCLora, TokenDeltas
from .errors import LoraError
from .read import FORMATS, identify_lora, load_lora_file, read_lora

__all__ = ["FORMATS", "FORMAT_NAMES", "LoraError", "LowRank", "StageCLora", "TokenDeltas",
           "identify_lora", "load_lora_file", "read_lora"]
