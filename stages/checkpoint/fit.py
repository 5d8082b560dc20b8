"""Does a state dict fit the network built from it? Every difference named, key by key.

The constructor kwargs are read from a few shapes of a file (configs.py); the other tensors must
then agree with them. A file whose tensors contradict each other (a hand-edited or corrupt header,
a merge gone wrong) must end in the pack's CheckpointError naming the file and the key, never in
PyTorch's "size mismatch" or "Only Tensors of floating point can require gradients".
"""
import torch

from .errors import CheckpointError


def check_fits(network, state_dict, source_name, what):
    """CheckpointError unless `state_dict` has exactly `network`'s keys, shapes and kinds of dtype.

    `network` may live on the meta device: only its shapes and dtypes are read.
    """
    expected = network.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{source_name} does not fit the {what} network that its own shapes describe "
            f"(missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
            f"unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}). It is corrupt or was edited: download it again."
        )
    for key, wanted in expected.items():
        found = state_dict[key]
        if tuple(found.shape) != tuple(wanted.shape):
            raise CheckpointError(
                f"{source_name}: the tensor '{key}' has shape {list(found.shape)}, but the {what} network that the "
                f"file's other tensors describe needs {list(wanted.shape)} there. The file is corrupt or was edited: download it again."
            )
        if wanted.is_floating_point() and not found.is_floating_point():
            raise CheckpointError(
                f"{source_name}: the tensor '{key}' is stored as {str(found.dtype).removeprefix('torch.')}, but the {what} "
                "network needs floating-point weights there. The file is corrupt or was edited: download it again."
            )


_NETWORKS = {"stage_c": ("StageC", "Stage C"), "stage_b": ("StageB", "Stage B"), "stage_a": ("StageA", "Stage A"),
             "effnet": ("EfficientNetEncoder", "EfficientNet encoder"), "previewer": ("Previewer", "Previewer")}


def check_network_fits(want, state_dict, config, source_name):
    """Builds network `want` from `config` on the meta device (no memory) and checks `state_dict` against it."""
    if want not in _NETWORKS:
        return
    from ..variants import model_class

    class_name, what = _NETWORKS[want]
    try:
        network = model_class(class_name)(**config, device=torch.device("meta"))
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError) as error:
        raise CheckpointError(
            f"{source_name}: its shapes describe a {what} that cannot be built ({type(error).__name__}: {error}). "
            "The file is corrupt or was edited: download it again."
        ) from error
    check_fits(network, state_dict, source_name, what)
