"""What both benchmarks share: the host imported in-process (CPU), the pack under a fixed name,
seeded full-size weights, memory readings and medians.

The repository root is the pack; like tests/conftest.py, we import it by file path as
`stable_cascade_pack`, the way the host does.
"""
import json
import os
import platform
import statistics
import struct
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # for the dev tooling, `devtools`; after the host's folder, whose nodes.py
    sys.path.append(str(REPO_ROOT))  # must not be shadowed by the pack's nodes/ (pack_env.pin_host_nodes_module)
from devtools import pack_env as _pack_env  # noqa: E402
from devtools.pack_env import ENV_DIR, HOST_DIR, PACK_NAME, register_pack  # noqa: E402,F401
from devtools.pack_env import import_host as _import_host  # noqa: E402

BENCH_DIR = Path(os.environ.get("SC_BENCH_DIR", ENV_DIR / "bench"))
GiB = 1024**3


def import_host(cpu=True):
    """The pinned host, importable in this process (CPU only unless cpu=False: then the host picks
    the device, e.g. CUDA); then the pack (it imports comfy)."""
    if cpu:
        _import_host()
    else:
        if str(HOST_DIR) not in sys.path:
            sys.path.insert(0, str(HOST_DIR))
        import comfy.model_management  # noqa: F401
        _pack_env.pin_host_nodes_module()
    register_pack()


def proc_status():
    """VmRSS / VmHWM / RssAnon / RssFile of this process, in bytes (Linux /proc/self/status)."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def median(values):
    return statistics.median(values)


def machine_line():
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), python {platform.python_version()}")


# --- Seeded full-size weights -----------------------------------------------------------------

def original_layout_shapes(variant):
    """{key: shape} of a released file (ORIGINAL layout: packed in_proj q/k/v), from our own
    network built on the meta device: no memory, no file."""
    from stable_cascade_pack.stages.checkpoint.layouts import convert_state_dict
    from stable_cascade_pack.stages.variants import build_released

    network = build_released(variant, device="meta")
    original = convert_state_dict(network.state_dict(), "pack", "original")
    return {key: tuple(original[key].shape) for key in original}


def seeded_tensor(key, shape, seed):
    """A reproducible tensor for one key: N(0, 1/fan_in) for weights, small values for the rest."""
    import zlib

    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    std = (1.0 / fan_in) ** 0.5 if len(shape) > 1 else 0.02
    return torch.randn(shape, generator=generator, dtype=torch.float32) * std


SAFETENSORS_DTYPES = {"float32": ("F32", 4), "bfloat16": ("BF16", 2), "float16": ("F16", 2)}


def write_safetensors_streaming(path, shapes, dtype_name, seed=0):
    """Writes a .safetensors file one tensor at a time (never more than one tensor in memory).

    The format is an 8-byte little-endian header length, a JSON header {key: {dtype, shape,
    data_offsets}}, then the raw bytes; we lay the tensors out in key order.
    """
    import torch

    code, itemsize = SAFETENSORS_DTYPES[dtype_name]
    torch_dtype = getattr(torch, dtype_name)
    header, offset = {}, 0
    for key in sorted(shapes):
        count = 1
        for size in shapes[key]:
            count *= size
        header[key] = {"dtype": code, "shape": list(shapes[key]), "data_offsets": [offset, offset + count * itemsize]}
        offset += count * itemsize
    header["__metadata__"] = {"format": "pt", "note": f"seeded random weights (seed {seed}) for benchmarks"}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    partial = Path(str(path) + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "wb") as file:
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for key in sorted(shapes):
            tensor = seeded_tensor(key, shapes[key], seed).to(torch_dtype).contiguous()
            raw = tensor.view(torch.int16) if itemsize == 2 else tensor
            file.write(raw.numpy().tobytes())
            del tensor, raw
    partial.rename(path)
    return Path(path)


def seeded_state_dict(variant, seed=0):
    """{key: fp32 tensor} in the PACK layout for a released variant, seeded like the files."""
    from stable_cascade_pack.stages.variants import build_released

    network = build_released(variant, device="meta")
    return {key: seeded_tensor(key, tuple(value.shape), seed) for key, value in network.state_dict().items()}
