"""Malformed safetensors headers: every mutation either loads or raises the pack's CheckpointError.

The tiny stand-ins of every network (devtools/standin_models.py) are rewritten with one thing
changed in their header (a key dropped or renamed, a dtype, shape or offset changed, an entry
replaced by JSON of the wrong type, the header itself broken) and loaded the way the loader nodes
load. A mutation that loads must give a network that really takes the weights; one that does not
must end in CheckpointError naming the file: never a KeyError, IndexError, "size mismatch" or a
safetensors exception.
"""
import json
import random
import struct

import pytest
import torch

from devtools import standin_models

STANDIN = standin_models
WANT = {"stage_c": "stage_c", "stage_b": "stage_b", "stage_a": "stage_a", "effnet": "effnet", "previewer": "previewer"}
# Keys drawn per file for the key-level mutations (seeded); the EfficientNet stand-in has the real
# backbone (80 MB), so it gets fewer rewrites.
KEYS_PER_FILE = {"effnet": 1}
DEFAULT_KEYS_PER_FILE = 3


def split_file(path):
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + size]), raw[8 + size:]


def write_file(path, header, data, header_bytes=None):
    header_bytes = json.dumps(header).encode() if header_bytes is None else header_bytes
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)


def _shape_numel(shape):
    count = 1
    for dim in shape:
        count *= dim
    return count


def key_mutations(header, key):
    """(name, new header) for mutations of one tensor's entry."""
    entry = header[key]
    shape, dtype = entry["shape"], entry["dtype"]

    def changed(**fields):
        return {**header, key: {**entry, **fields}}

    without = {k: v for k, v in header.items() if k != key}
    yield "drop", without
    yield "rename", {**without, key + "_renamed": entry}
    yield "renumber", {**without, key.replace(".0.", ".9.", 1) if ".0." in key else "x." + key: entry}
    same_size = {"F32": "I32", "BF16": "F16", "F16": "BF16", "I64": "F64"}.get(dtype)
    if same_size:
        yield f"dtype {dtype}->{same_size}", changed(dtype=same_size)
    yield "dtype of another size", changed(dtype="F64" if dtype != "F64" else "F32")
    yield "dtype unknown", changed(dtype="F33")
    yield "dtype a number", changed(dtype=5)
    if len(shape) > 1:
        yield "shape reversed", changed(shape=list(reversed(shape)))
        yield "shape merged", changed(shape=[shape[0] * shape[1], *shape[2:]])
    yield "shape plus a 1", changed(shape=[*shape, 1])
    yield "shape flattened", changed(shape=[_shape_numel(shape)])
    yield "shape scalar", changed(shape=[]) if _shape_numel(shape) == 1 else changed(shape=[])
    yield "shape doubled", changed(shape=[shape[0] * 2, *shape[1:]] if shape else [2])
    yield "shape negative", changed(shape=[-1, *shape[1:]])
    yield "shape of floats", changed(shape=[float(d) + 0.5 for d in shape])
    yield "shape a string", changed(shape="abc")
    yield "offsets shifted", changed(data_offsets=[o + 1 for o in entry["data_offsets"]])
    yield "offsets reversed", changed(data_offsets=list(reversed(entry["data_offsets"])))
    yield "offsets short", changed(data_offsets=entry["data_offsets"][:1])
    yield "offsets null", changed(data_offsets=None)
    yield "entry a string", {**header, key: "x"}
    yield "entry a list", {**header, key: [1, 2]}
    yield "entry null", {**header, key: None}


def offset_swaps(header, key, other):
    """Two tensors' data swapped: loads when their sizes and shapes agree, else refused."""
    a, b = header[key], header[other]
    yield "offsets swapped", {**header, key: {**a, "data_offsets": b["data_offsets"]},
                              other: {**b, "data_offsets": a["data_offsets"]}}


def whole_header_mutations(header, data):
    """(name, header, data, header bytes or None)."""
    raw = json.dumps(header).encode()
    yield "header a list", [header], data, None
    yield "header a string", "header", data, None
    yield "header invalid JSON", None, data, raw[: len(raw) // 2]
    yield "header not UTF-8", None, data, b"\xff\xfe" + raw
    yield "metadata a list", {**header, "__metadata__": ["x"]}, data, None
    yield "metadata of numbers", {**header, "__metadata__": {"format": 5}}, data, None
    yield "data cut", header, data[: len(data) // 2], None
    yield "data extended", header, data + b"\0" * 64, None
    yield "no tensors", {}, b"", None


def cases(paths):
    rng = random.Random(17)
    for role, path in sorted(paths.items()):
        header, data = split_file(path)
        keys = sorted(k for k in header if k != "__metadata__")
        for key in rng.sample(keys, KEYS_PER_FILE.get(role, DEFAULT_KEYS_PER_FILE)):
            for name, mutated in key_mutations(header, key):
                yield role, f"{role}: {name} ({key})", mutated, data, None
            for name, mutated in offset_swaps(header, key, rng.choice(keys)):
                yield role, f"{role}: {name} ({key})", mutated, data, None
        for name, mutated, mutated_data, raw in whole_header_mutations(header, data):
            yield role, f"{role}: {name}", mutated, mutated_data, raw


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    return STANDIN.write_standin_models(tmp_path_factory.mktemp("standins"))


def load_into_network(path, want):
    """What a loader does with a file: extract the network's weights, build it, put them in."""
    from stable_cascade_pack.stages.checkpoint import check_network_fits, load_checkpoint
    from stable_cascade_pack.stages.checkpoint.fit import _NETWORKS
    from stable_cascade_pack.stages.variants import model_class

    state_dict, config = load_checkpoint(path, want)
    check_network_fits(want, state_dict, config, path.name)  # as nodes/model_files.load_network does
    network = model_class(_NETWORKS[want][0])(**config, device=torch.device("meta"))
    network.load_state_dict(state_dict, strict=True, assign=True)
    return network


def test_every_header_mutation_loads_or_raises_the_packs_checkpoint_error(standins, tmp_path):
    from stable_cascade_pack.stages.checkpoint import CheckpointError

    outcomes = {"loaded": [], "refused": []}
    escaped = []
    for role, name, header, data, raw in cases(standins):
        path = tmp_path / f"mutated_{role}.safetensors"
        write_file(path, header, data, raw)
        try:
            load_into_network(path, WANT[role])
            outcomes["loaded"].append(name)
        except CheckpointError as error:
            if path.name not in str(error):
                escaped.append(f"{name}: the message does not name the file: {error}")
            outcomes["refused"].append(name)
        except Exception as error:  # noqa: BLE001 - any other kind is what this test is for
            escaped.append(f"{name}: {type(error).__name__}: {error}"[:400])
    print(f"{len(outcomes['loaded'])} mutations loaded, {len(outcomes['refused'])} refused, {len(escaped)} escaped")
    assert not escaped, "\n".join(escaped)
    assert len(outcomes["refused"]) > 150, "the mutations should mostly be refused"
    # Renaming dtypes of the same width (bf16 <-> fp16) or swapping equal-shaped tensors is a
    # different but well-formed file: those must still load.
    assert any("BF16->F16" in name for name in outcomes["loaded"]), outcomes["loaded"]


def test_a_shape_that_contradicts_the_others_names_file_key_and_expectation(standins, tmp_path):
    from stable_cascade_pack.stages.checkpoint import CheckpointError

    header, data = split_file(standins["stage_b"])
    key = next(k for k in sorted(header) if k.endswith("channelwise.4.weight"))
    rows, columns = header[key]["shape"]
    header[key] = {**header[key], "shape": [columns, rows]}
    path = tmp_path / "edited_stage_b.safetensors"
    write_file(path, header, data)
    with pytest.raises(CheckpointError) as error:
        load_into_network(path, "stage_b")
    message = str(error.value)
    assert path.name in message and key in message and f"[{rows}, {columns}]" in message, message


def test_a_header_entry_of_the_wrong_kind_names_the_key(standins, tmp_path):
    from stable_cascade_pack.stages.checkpoint import CheckpointError

    header, data = split_file(standins["previewer"])
    key = sorted(k for k in header if k != "__metadata__")[0]
    header[key] = {**header[key], "shape": "abc"}
    path = tmp_path / "edited_previewer.safetensors"
    write_file(path, header, data)
    with pytest.raises(CheckpointError, match=rf"{path.name} is corrupt: the header entry of tensor '{key}' has shape 'abc'"):
        load_into_network(path, "previewer")
