"""LoRA layers beside the frozen Linear layers of a network (the original `modules/lora.py` idea).

A LoRA adds a low-rank term to a Linear layer's output:

    y = W x + b + scale * up (down x),     scale = alpha / rank

It is attached with a forward hook, so the base layer (ours, or the host's casting Linear) keeps
its own weights, dtype and device handling, and nothing of the network changes: removing the hooks
gives back the network exactly as it was. As in the original, `down` starts at zero and `up` at
N(0, 1), so a fresh LoRA is a no-op, and alpha is 1 (scale = 1 / rank).
"""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn

# Which Linear layers get a LoRA. "attention" is the original's `module_filters: ['.attn']`: the
# q/k/v and output projections of every attention block (the original's in_proj_weight is our to_q,
# to_k, to_v), nothing else.
LAYER_CHOICES = ("attention", "all_linear")


class LoRA(nn.Module):
    def __init__(self, in_features, out_features, rank, alpha=1.0):
        super().__init__()
        self.down = nn.Parameter(torch.zeros(rank, in_features))
        self.up = nn.Parameter(torch.randn(out_features, rank))
        self.alpha = float(alpha)
        self.scale = self.alpha / rank

    def forward(self, x):
        return F.linear(F.linear(x, self.down.to(x.dtype)), self.up.to(x.dtype)) * self.scale


def target_layers(network, layers="attention"):
    """{module name: Linear} of the layers that get a LoRA, in module order."""
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}")
    found = {}
    for name, module in network.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        if layers == "all_linear" or ".attention.attn." in f".{name}":
            found[name] = module
    if not found:
        raise ValueError(f"the network has no {layers} Linear layers to put a LoRA on")
    return found


class LoRASet(nn.Module):
    """One LoRA per target layer, addressed by the layer's module name."""

    def __init__(self, network, rank=4, layers="attention", alpha=1.0):
        super().__init__()
        if not (isinstance(rank, int) and rank >= 1):
            raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
        self.rank, self.layers = rank, layers
        modules = target_layers(network, layers)
        self.names = list(modules)
        self.adapters = nn.ModuleList(
            LoRA(modules[name].in_features, modules[name].out_features, rank, alpha) for name in self.names
        )

    def items(self):
        return zip(self.names, self.adapters)

    @contextlib.contextmanager
    def attached(self, network):
        """Within the block, `network`'s target layers add their LoRA term to their output."""
        modules = dict(network.named_modules())
        missing = [name for name in self.names if name not in modules]
        if missing:
            raise ValueError(f"the LoRA was made for another network: it has no layers {missing[:3]}")
        handles = []
        try:
            for name, adapter in self.items():
                handles.append(modules[name].register_forward_hook(_adding(adapter)))
            yield self
        finally:
            for handle in handles:
                handle.remove()


def _adding(adapter):
    def hook(module, args, output):
        return output + adapter(args[0]).to(output.dtype)
    return hook
