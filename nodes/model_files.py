"""Finding and reading model files in the host's folders, with errors that name the file."""
import os

import comfy.utils
import folder_paths

from ..stages.checkpoint import CheckpointError, check_network_fits, load_checkpoint


def filenames(*folders):
    """Files of these host folders, in the order given, without duplicates (for a combo input)."""
    seen = []
    for folder in folders:
        for name in folder_paths.get_filename_list(folder):
            if name not in seen:
                seen.append(name)
    return seen


def full_path(filename, *folders):
    for folder in folders:
        path = folder_paths.get_full_path(folder, filename)
        if path is not None:
            return path
    searched = ", ".join(f"models/{folder}" for folder in folders)
    raise FileNotFoundError(f"{filename}: no such file in {searched}")


def read_state_dict(path):
    """The file's tensors (memory-mapped for safetensors; pickles only with weights_only=True)."""
    name = os.path.basename(path)
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{name} is empty (0 bytes): the download or copy did not finish")
    try:
        return comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as error:  # the host raises many kinds for truncated or foreign files
        raise CheckpointError(
            f"{name} could not be read as a checkpoint ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "It is probably truncated or not a model file: download it again."
        ) from error


def load_network(filename, folders, want):
    """(pack-layout state dict, constructor kwargs) of network `want` from a file in these folders."""
    path = full_path(filename, *folders)
    state_dict, config = load_checkpoint(path, want, read_state_dict)
    check_network_fits(want, state_dict, config, os.path.basename(path))  # names the key before PyTorch would not
    return state_dict, config
