"""Stage B: the latent decoder from the Stage C latent to the Stage A latent (official.md §3).

Four levels, each half the resolution of the one above (strided 2x2 conv down, transposed conv up).
The 16-channel Stage C latent is upsampled to the stem's grid, mapped and added to the stem output; a
small pixel image is added the same way. The pooled CLIP text embedding becomes c_clip_seq tokens that
only the AttnBlocks of the deep levels see.
"""
import torch.nn.functional as F
from torch import nn

from .blocks import LayerNorm2d
from .trunk import CascadeUNet


def _conditioning_mapper(c_in, c_hidden, c_out, dtype, device, operations):
    """1x1 conv -> GELU -> 1x1 conv -> LayerNorm2d (keys .0 and .2)."""
    return nn.Sequential(
        operations.Conv2d(c_in, c_hidden, kernel_size=1, dtype=dtype, device=device),
        nn.GELU(),
        operations.Conv2d(c_hidden, c_out, kernel_size=1, dtype=dtype, device=device),
        LayerNorm2d(c_out, dtype=dtype, device=device, operations=operations),
    )


def _resize_to(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class StageB(CascadeUNet):
    def __init__(self, c_in=4, c_out=4, c_r=64, patch_size=2, c_cond=1280, c_hidden=[320, 640, 1280, 1280],
                 nhead=[-1, -1, 20, 20], blocks=[[2, 6, 28, 6], [6, 28, 6, 2]],
                 block_repeat=[[1, 1, 1, 1], [3, 3, 2, 2]], level_config=["CT", "CT", "CTA", "CTA"],
                 c_clip=1280, c_clip_seq=4, c_effnet=16, c_pixels=3, kernel_size=3, dropout=[0, 0, 0.1, 0.1],
                 self_attn=True, t_conds=["sca"], *, dtype=None, device=None, operations=None):
        super().__init__()
        operations = operations if operations is not None else nn
        self.c_clip_seq = c_clip_seq
        self.c_pixels = c_pixels

        # Conditioning
        self.effnet_mapper = _conditioning_mapper(c_effnet, c_hidden[0] * 4, c_hidden[0], dtype, device, operations)
        self.pixels_mapper = _conditioning_mapper(c_pixels, c_hidden[0] * 4, c_hidden[0], dtype, device, operations)
        self.clip_mapper = operations.Linear(c_clip, c_cond * c_clip_seq, dtype=dtype, device=device)
        self.clip_norm = operations.LayerNorm(c_cond, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)

        def make_downscaler(c_from, c_to, level):
            return operations.Conv2d(c_from, c_to, kernel_size=2, stride=2, dtype=dtype, device=device)

        def make_upscaler(c_from, c_to, level):
            return operations.ConvTranspose2d(c_from, c_to, kernel_size=2, stride=2, dtype=dtype, device=device)

        self._build_trunk(
            c_in=c_in, c_out=c_out, c_r=c_r, patch_size=patch_size, c_cond=c_cond, c_hidden=c_hidden,
            nhead=nhead, blocks=blocks, block_repeat=block_repeat, level_config=level_config,
            kernel_size=kernel_size, dropout=dropout, self_attn=self_attn, t_conds=t_conds,
            make_downscaler=make_downscaler, make_upscaler=make_upscaler,
            dtype=dtype, device=device, operations=operations,
        )

    def gen_c_embeddings(self, clip):
        """Pooled CLIP text embedding [B, (1,) c_clip] -> c_clip_seq condition tokens [B, c_clip_seq, c_cond]."""
        clip = clip.unsqueeze(1) if clip.dim() == 2 else clip
        tokens = self.clip_mapper(clip).view(clip.size(0), clip.size(1) * self.c_clip_seq, -1)
        return self.clip_norm(tokens)

    def forward(self, x, r, effnet, clip, pixels=None, sca=None, **kwargs):
        """x [B,4,H,W] noised Stage A latent, r [B], effnet [B,16,h,w] Stage C latent, clip [B,1,1280]
        -> [B,4,H,W]. `pixels` (default zeros [B,3,8,8]) is a tiny RGB hint; other keyword arguments
        (the host's `transformer_options`, ...) are ignored apart from values for extra `t_conds`."""
        if pixels is None:
            pixels = x.new_zeros(x.size(0), self.c_pixels, 8, 8)
        r_embed = self.noise_level_embeddings(r, dict(kwargs, sca=sca)).to(x.dtype)
        cond_tokens = self.gen_c_embeddings(clip.to(x.dtype))

        h = self.embedding(x)
        h = h + self.effnet_mapper(_resize_to(effnet.to(h.dtype), h.shape[-2:]))
        h = h + _resize_to(self.pixels_mapper(pixels.to(h.dtype)), h.shape[-2:])
        return self._down_and_up(h, r_embed, cond_tokens)
