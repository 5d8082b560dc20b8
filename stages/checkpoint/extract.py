"""Pull one network out of a checkpoint, in the pack layout, with its constructor kwargs."""
import os

from . import layouts
from .errors import CheckpointError, missing_part, wrong_file
from .header import read_safetensors_header
from .identify import identify, what_it_is

UNET_KINDS = ("stage_c", "stage_b")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def extract(state_dict, want, source_name="checkpoint"):
    """(pack-layout state dict, constructor kwargs) of network `want` held by `state_dict`.

    `want`: stage_c, stage_b, stage_a, effnet, previewer, stage_c_coder, text_encoder or clip_vision.
    Accepts original, host, diffusers and ComfyUI-bundled layouts. The result holds the input's own
    tensors (attention thirds are views), so memory-mapped weights are not copied.
    Raises CheckpointError naming the file, what it is and which loader takes it.
    """
    prefix, info = locate(state_dict, want, source_name)
    key_map = layouts.prefix_key_map(state_dict, prefix)
    if want in UNET_KINDS:
        key_map = layouts.compose(key_map, layouts.unet_key_map(key_map, info.layout, want))
    return layouts.apply_key_map(state_dict, key_map), info.config


def locate(state_dict_or_shapes, want, source_name="checkpoint"):
    """(key prefix, CheckpointInfo) of network `want` inside a checkpoint; CheckpointError if absent."""
    try:
        info = identify(state_dict_or_shapes)
    except CheckpointError as error:
        raise CheckpointError(f"{source_name} looks like a Stable Cascade file but its keys do not fit together: {error}") from error
    if info.kind == "empty":
        raise CheckpointError(f"{source_name} holds no tensors at all (an empty checkpoint): the {want.replace('_', ' ')} cannot come from it.")
    found = _find(info, want)
    if found is not None:
        return found
    if info.parts and info.kind not in ("unknown_unet",):
        raise missing_part(source_name, what_it_is(info), info.kind, want)
    raise wrong_file(source_name, what_it_is(info), info.kind, want)


def _find(info, want):
    if info.kind == want:
        return "", info
    for prefix, part in info.parts.values():
        found = _find(part, want)
        if found is not None:
            return prefix + found[0], found[1]
    return None


def load_checkpoint(path, want, read_state_dict=None):
    """extract() from a file; a .safetensors file is refused from its header before any weight is read.

    `read_state_dict(path)` reads the tensors: the loader nodes pass the host's reader (which also
    takes .ckpt/.pt files, unpickled with weights_only=True only); safetensors' own by default.
    """
    source_name = os.path.basename(str(path))
    if str(path).lower().endswith(SAFETENSORS_SUFFIXES):
        locate(read_safetensors_header(path), want, source_name)
    state_dict = (read_state_dict or _read_safetensors)(str(path))
    return extract(state_dict, want, source_name)


def _read_safetensors(path):
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as error:  # safetensors' own errors: offsets with gaps, overlaps, bad UTF-8, ...
        raise CheckpointError(
            f"{os.path.basename(path)} could not be read as a safetensors file ({type(error).__name__}: {error}). "
            "It is corrupt or truncated: download it again."
        ) from error
