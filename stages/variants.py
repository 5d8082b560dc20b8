"""The released Stable Cascade models: which class and constructor kwargs each file was built with.

`RELEASED_CONFIGS[name] = (class name in stages/, constructor kwargs)`; the kwargs are the original
constructor's (official.md §2-5, Appendix A). `build_released(name, ...)` instantiates one.
"""
import copy
import importlib

RELEASED_CONFIGS = {
    # stage_c.safetensors / stage_c_bf16.safetensors (3.6B)
    "stage_c_big": ("StageC", dict(
        c_in=16, c_out=16, c_r=64, patch_size=1, c_cond=2048, c_hidden=[2048, 2048], nhead=[32, 32],
        blocks=[[8, 24], [24, 8]], block_repeat=[[1, 1], [1, 1]], level_config=["CTA", "CTA"],
        c_clip_text=1280, c_clip_text_pooled=1280, c_clip_img=768, c_clip_seq=4, kernel_size=3,
        dropout=[0.1, 0.1], self_attn=True, t_conds=["sca", "crp"], switch_level=[False],
    )),
    # stage_c_lite*.safetensors (1B)
    "stage_c_lite": ("StageC", dict(
        c_in=16, c_out=16, c_r=64, patch_size=1, c_cond=1536, c_hidden=[1536, 1536], nhead=[24, 24],
        blocks=[[4, 12], [12, 4]], block_repeat=[[1, 1], [1, 1]], level_config=["CTA", "CTA"],
        c_clip_text=1280, c_clip_text_pooled=1280, c_clip_img=768, c_clip_seq=4, kernel_size=3,
        dropout=[0.1, 0.1], self_attn=True, t_conds=["sca", "crp"], switch_level=[False],
    )),
    # stage_b.safetensors / stage_b_bf16.safetensors ("3B" in the training code, 1.5B parameters)
    "stage_b_big": ("StageB", dict(
        c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=1280, c_hidden=[320, 640, 1280, 1280],
        nhead=[-1, -1, 20, 20], blocks=[[2, 6, 28, 6], [6, 28, 6, 2]], block_repeat=[[1, 1, 1, 1], [3, 3, 2, 2]],
        level_config=["CT", "CT", "CTA", "CTA"], c_clip=1280, c_clip_seq=4, c_effnet=16, c_pixels=3,
        kernel_size=3, dropout=[0, 0, 0.1, 0.1], self_attn=True, t_conds=["sca"],
    )),
    # stage_b_lite*.safetensors (700M)
    "stage_b_lite": ("StageB", dict(
        c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=1280, c_hidden=[320, 576, 1152, 1152],
        nhead=[-1, 9, 18, 18], blocks=[[2, 4, 14, 4], [4, 14, 4, 2]], block_repeat=[[1, 1, 1, 1], [2, 2, 2, 2]],
        level_config=["CT", "CT", "CTA", "CTA"], c_clip=1280, c_clip_seq=4, c_effnet=16, c_pixels=3,
        kernel_size=3, dropout=[0, 0, 0.1, 0.1], self_attn=True, t_conds=["sca"],
    )),
    # stage_a.safetensors
    "stage_a": ("StageA", dict(
        levels=2, bottleneck_blocks=12, c_hidden=384, c_latent=4, codebook_size=8192, scale_factor=0.43,
    )),
    # effnet_encoder.safetensors
    "effnet_encoder": ("EfficientNetEncoder", dict(c_latent=16)),
    # previewer.safetensors
    "previewer": ("Previewer", dict(c_in=16, c_hidden=512, c_out=3)),
}

_CLASS_MODULES = {
    "StageA": ".stage_a",
    "StageB": ".stage_b",
    "StageC": ".stage_c",
    "EfficientNetEncoder": ".effnet",
    "Previewer": ".previewer",
}


def model_class(class_name):
    """The class in stages/ called `class_name` (e.g. "StageC")."""
    module = importlib.import_module(_CLASS_MODULES[class_name], package=__package__)
    return getattr(module, class_name)


def build_released(name, *, dtype=None, device=None, operations=None):
    """Instantiate the released variant `name` (a key of RELEASED_CONFIGS); device="meta" costs nothing."""
    if name not in RELEASED_CONFIGS:
        raise KeyError(f"unknown released variant {name!r}; expected one of {sorted(RELEASED_CONFIGS)}")
    class_name, kwargs = RELEASED_CONFIGS[name]
    return model_class(class_name)(**copy.deepcopy(kwargs), dtype=dtype, device=device, operations=operations)
