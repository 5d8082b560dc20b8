"""Checkpoint files of the cascade: what a file holds, its network config, and the pack layout.

    info = identify(state_dict_or_header)          # kind, variant, layout, size, dtype, config
    describe(info)                                 # "Stage C lite (1.0B), bf16, original layout"
    state_dict, config = extract(sd, want="stage_c", source_name="stage_c_lite.safetensors")
    header = read_safetensors_header(path)         # {key: (dtype, shape)}, no weights read
"""
from .errors import LOADER_FOR_KIND, CheckpointError
from .extract import extract, load_checkpoint, locate
from .header import read_safetensors_header
from .identify import CheckpointInfo, describe, identify

__all__ = [
    "CheckpointError", "CheckpointInfo", "LOADER_FOR_KIND",
    "describe", "extract", "identify", "load_checkpoint", "locate", "read_safetensors_header",
]
