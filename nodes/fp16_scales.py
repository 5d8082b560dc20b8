"""The fp16 block factors of a Stage C file (stages/fp16_rescale.py): calibrated from the user's own
file at load, on the CPU in fp32, then cached per file in the host's user directory."""
import contextlib
import json
import logging
import os

import torch

import folder_paths

from ..stages.fp16_rescale import Fp16RescaleError, calibrate_block_scales, calibration_inputs

# Bump when the calibration changes, so that cached factors are computed again.
CALIBRATION_VERSION = 1


def cache_file():
    return os.path.join(folder_paths.get_user_directory(), "stable_cascade_pack", "fp16_block_scales.json")


def _file_key(path):
    stat = os.stat(path)
    return f"{os.path.basename(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def _read_cache():
    try:
        with open(cache_file(), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _write_cache(cache):
    path = cache_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(cache, handle, indent=1)
    os.replace(path + ".tmp", path)


@contextlib.contextmanager
def _layers_cast_to_their_input(network):
    """The host's layers compute in their weights' dtype unless told to cast; calibration feeds fp32."""
    layers = [module for module in network.modules() if hasattr(module, "comfy_cast_weights")]
    saved = [layer.comfy_cast_weights for layer in layers]
    for layer in layers:
        layer.comfy_cast_weights = True
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.comfy_cast_weights = value


def calibrate(network):
    """Factors for `network` from one fp32 forward on the CPU, where its weights are at load."""
    device = next(network.parameters()).device
    with _layers_cast_to_their_input(network):
        return calibrate_block_scales(network, calibration_inputs(network, device=device))


def block_scales_for(network, source_path):
    """The cached factors of this file (name, size and modification time), else calibrated now and cached.
    Raises Fp16RescaleError (also cached) when the file's activations cannot be brought inside fp16."""
    key = _file_key(source_path) if source_path else None
    cache = _read_cache() if key else {}
    entry = cache.get(key)
    if entry is None or entry.get("version") != CALIBRATION_VERSION:
        logging.info("Stable Cascade pack: calibrating fp16 factors for %s (once per file)", os.path.basename(source_path or "?"))
        try:
            entry = {"version": CALIBRATION_VERSION, "block_scales": calibrate(network)}
        except Fp16RescaleError as error:
            entry = {"version": CALIBRATION_VERSION, "error": str(error)}
        if key:
            cache[key] = entry
            _write_cache(cache)
    if "error" in entry:
        raise Fp16RescaleError(entry["error"])
    return entry["block_scales"]
