"""Making host-loaded weights usable by autograd.

The host runs every node under torch.inference_mode(), so weights a loader created there are
"inference tensors", which autograd refuses to save for the backward pass even when they take no
gradient themselves. Training swaps each such parameter/buffer for an ordinary tensor with the same
values (one tensor at a time, so memory grows by one tensor at most). Nothing else changes: the
values are bit-identical and the host keeps using the module as before.
"""
import torch


def make_autograd_ready(module):
    with torch.inference_mode(False):
        for submodule in module.modules():
            for name, parameter in list(submodule._parameters.items()):
                if parameter is not None and parameter.is_inference():
                    submodule._parameters[name] = torch.nn.Parameter(parameter.clone(), requires_grad=False)
            for name, buffer in list(submodule._buffers.items()):
                if buffer is not None and buffer.is_inference():
                    submodule._buffers[name] = buffer.clone()
    return module
