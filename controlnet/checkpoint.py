"""What a ControlNet file is, from its keys and shapes: bottleneck, input channels, width, injection blocks, use."""
import re
from dataclasses import dataclass

from .module import RELEASED_INJECTION_BLOCKS, RELEASED_LARGE_WIDTHS

# What each released use feeds the ControlNet, by bottleneck and input channels (official.md §6.3).
KINDS = {
    ("effnet", 1): "canny",
    ("effnet", 3): "canny",
    ("effnet", 4): "inpainting",
    ("large", 16): "super_resolution",
    ("simple", 512): "identity",
}
# Which of Stage C's 64 ResBlock calls get a residual, by number of projections in the file.
INJECTION_BLOCKS = {len(RELEASED_INJECTION_BLOCKS): RELEASED_INJECTION_BLOCKS, 64: list(range(64))}


@dataclass(frozen=True)
class ControlNetSpec:
    kind: str  # canny, inpainting, super_resolution, identity
    bottleneck: str  # effnet, large, simple
    c_in: int
    c_proj: int  # the Stage C width it was trained for (2048: the 3.6B model)
    proj_blocks: tuple
    large_widths: tuple | None = None  # 'large' only: (expanded, hidden, residual blocks, features)

    def constructor_kwargs(self):
        kwargs = dict(c_in=self.c_in, c_proj=self.c_proj, proj_blocks=list(self.proj_blocks),
                      bottleneck_mode=self.bottleneck)
        if self.large_widths is not None and self.large_widths != RELEASED_LARGE_WIDTHS:
            kwargs["large_widths"] = list(self.large_widths)
        return kwargs


def controlnet_spec(shapes, source_name="ControlNet file"):
    """ControlNetSpec from {key: shape} (a state dict's tensors' shapes); ValueError naming the file otherwise."""
    shapes = {key: tuple(getattr(value, "shape", value)) for key, value in shapes.items()}
    if "backbone.0.0.weight" in shapes:
        bottleneck, c_in = "effnet", shapes["backbone.0.0.weight"][1]
    elif any(re.match(r"backbone\.\d+\.blocks\.0\.weight$", key) for key in shapes):
        bottleneck, c_in = "large", shapes["backbone.0.weight"][1]
    elif "backbone.0.weight" in shapes and "backbone.2.weight" in shapes:
        bottleneck, c_in = "simple", shapes["backbone.0.weight"][1]
    else:
        raise ValueError(f"{source_name} has no Stable Cascade ControlNet backbone (backbone.0.0.weight or backbone.0.weight)")
    projections = sorted({int(m.group(1)) for key in shapes if (m := re.match(r"projections\.(\d+)\.", key))})
    if not projections:
        raise ValueError(f"{source_name} has a ControlNet backbone but no projections.* weights: the file is incomplete")
    if len(projections) not in INJECTION_BLOCKS:
        raise ValueError(
            f"{source_name} has {len(projections)} projections; the Stable Cascade ControlNets have "
            f"{len(RELEASED_INJECTION_BLOCKS)} (canny, inpainting, super-resolution) or 64 (face identity), "
            "and the file does not say at which Stage C blocks others would go")
    kind = KINDS.get((bottleneck, c_in))
    if kind is None:
        raise ValueError(
            f"{source_name} is a ControlNet with a '{bottleneck}' bottleneck on {c_in} input channels, which matches none "
            f"of the released ones (canny: effnet/1, inpainting: effnet/4, super-resolution: large/16, identity: simple/512)")
    c_proj = shapes[f"projections.{projections[0]}.2.weight"][0]
    large_widths = _large_widths(shapes) if bottleneck == "large" else None
    return ControlNetSpec(kind, bottleneck, c_in, c_proj, tuple(INJECTION_BLOCKS[len(projections)]), large_widths)


def _large_widths(shapes):
    res_blocks = sorted({int(m.group(1)) for key in shapes if (m := re.match(r"backbone\.(\d+)\.blocks\.0\.weight$", key))})
    last_conv = 3 + len(res_blocks)
    return (shapes["backbone.0.weight"][0], shapes["backbone.2.weight"][0], len(res_blocks),
            shapes[f"backbone.{last_conv}.weight"][0])
