"""Letting the host's interrupt land inside a network call, not only between steps or tiles.

One step of a large latent can take minutes; the host's interrupt is only checked where the pack
asks. While a network runs under `interruptible`, every submodule call first asks the host whether
the user pressed cancel (a lock and a flag: nothing measurable next to a layer). Attention at huge
sizes runs in query chunks (stages/blocks.py), each one a submodule call, so no single call is long.
"""
from contextlib import contextmanager

import torch

import comfy.model_management as mm


def _raise_if_interrupted(module, inputs):
    # Inside a torch.compile'd network (the fast path) a Python check would break the graph into
    # pieces; there the host's own checks between steps remain.
    if torch.compiler.is_compiling():
        return
    mm.throw_exception_if_processing_interrupted()


@contextmanager
def interruptible(network):
    handles = [module.register_forward_pre_hook(_raise_if_interrupted) for module in network.modules()]
    try:
        yield network
    finally:
        for handle in handles:
            handle.remove()
