"""Checkpoint files of the cascade: what a file holds, its network config, and the pack layout.

    info = identify(state_dict_or_header)          # kind, variant, layout, size, dtype, config
    describe(info)                                 # "Stage C lite (1.0B), bf16, original layout"
    state_dict, config = extract(sd, want="stage_c", source_name="stage_c_lite.safetensors")
    state_dict, config = load_checkpoint(path, want="stage_b")   # the same, from a file (refused early)
    header = read_safetensors_header(path)         # {key: (dtype, shape)}, no weights read
    file_kind(info.kind)                           # its texts and the loader that takes it (kinds.py)
    check_network_fits("stage_c", state_dict, config, name)  # every key and shape, or a CheckpointError naming it
"""
from .errors import CheckpointError
from .extract import extract, load_checkpoint, locate
from .fit import check_fits, check_network_fits
from .header import read_safetensors_header
from .identify import CheckpointInfo, describe, identify
from .kinds import FILE_KINDS, FileKind, file_kind

__all__ = [
    "CheckpointError", "CheckpointInfo", "check_fits", "check_network_fits", "FILE_KINDS", "FileKind", "file_kind",
    "describe", "extract", "identify", "load_checkpoint", "locate", "read_safetensors_header",
]
