"""Keys, shapes and dtypes of a checkpoint without loading its weights.

`read_safetensors_header` reads only the JSON header of a .safetensors file, so a 14 GB Stage C can
be recognised (and a wrong file refused) in milliseconds. `key_shapes` turns whatever the caller
holds (tensors, a header, plain shapes) into the one form identification works on.
"""
import json
import os
import struct

import torch

from .errors import CheckpointError

# safetensors dtype codes -> the short names used in messages (and torch dtypes -> the same names)
_HEADER_DTYPES = {
    "F64": "fp64", "F32": "fp32", "F16": "fp16", "BF16": "bf16",
    "F8_E4M3": "fp8_e4m3fn", "F8_E5M2": "fp8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}
_TORCH_DTYPES = {
    torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
    torch.uint8: "uint8", torch.bool: "bool",
}
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):
        _TORCH_DTYPES[getattr(torch, _name)] = "fp" + _name.removeprefix("float")

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit


def read_safetensors_header(path):
    """{key: (dtype name, shape tuple)} from a .safetensors file's header, weights left on disk."""
    name = os.path.basename(str(path))
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as file:
            prefix = file.read(8)
            if file_size == 0:
                raise CheckpointError(f"{name} is empty (0 bytes): the download or copy did not finish.")
            if len(prefix) < 8:
                raise CheckpointError(f"{name} is truncated ({file_size} bytes): too short to be a safetensors file.")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > _MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{name} is not a safetensors file (its first 8 bytes do not give a plausible header size); "
                    "it may be a pickle checkpoint (.ckpt/.pt) renamed, or corrupt."
                )
            if 8 + header_size > file_size:
                raise CheckpointError(
                    f"{name} is truncated: its header needs {header_size} bytes but the file has only "
                    f"{file_size - 8} after the size field. Download it again."
                )
            raw_header = file.read(header_size)
    except OSError as error:
        raise CheckpointError(f"{name} cannot be read: {error}") from error

    try:
        header = json.loads(raw_header)
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{name} is corrupt: its safetensors header is not valid JSON ({error}).") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is corrupt: its safetensors header is a JSON {type(header).__name__}, not an object.")
    result = {}
    data_end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        problem = _entry_problem(entry)
        if problem:
            raise CheckpointError(f"{name} is corrupt: the header entry of tensor '{key}' {problem}. Download it again.")
        result[key] = (_HEADER_DTYPES.get(entry["dtype"], entry["dtype"].lower()), tuple(entry["shape"]))
        data_end = max(data_end, entry["data_offsets"][1])

    if 8 + header_size + data_end > file_size:
        raise CheckpointError(
            f"{name} is truncated: its header lists {data_end} bytes of tensor data but the file holds only "
            f"{file_size - 8 - header_size}. Download it again."
        )
    return result


# Every dtype the safetensors format defines, with its size in bytes.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
                "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(entry):
    """What is wrong with one tensor's header entry ({dtype, shape, data_offsets}), or None."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object with dtype, shape and data_offsets"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        return f"has dtype {dtype!r}; expected one of {', '.join(_DTYPE_BYTES)}"
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        return f"has shape {shape!r}; expected a list of non-negative integers"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]:
        return f"has data_offsets {offsets!r}; expected [begin, end] with 0 <= begin <= end"
    numel = 1
    for dim in shape:
        numel *= dim
    if offsets[1] - offsets[0] != numel * _DTYPE_BYTES[dtype]:
        return (f"has shape {shape} in {dtype} ({numel * _DTYPE_BYTES[dtype]} bytes) but data_offsets {offsets} "
                f"span {offsets[1] - offsets[0]} bytes")
    return None


def key_shapes(state_dict_or_shapes):
    """({key: shape tuple}, {key: dtype name}) from tensors, (dtype, shape) pairs or bare shapes."""
    shapes, dtypes = {}, {}
    for key, value in state_dict_or_shapes.items():
        if isinstance(value, torch.Tensor):
            shapes[key] = tuple(value.shape)
            dtypes[key] = _TORCH_DTYPES.get(value.dtype, str(value.dtype).removeprefix("torch."))
        elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            dtypes[key], shapes[key] = value[0], tuple(value[1])
        else:
            shapes[key] = tuple(value)
    return shapes, dtypes
