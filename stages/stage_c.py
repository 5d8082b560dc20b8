"""Stage C: the text-conditional prior in the 16-channel EfficientNet latent space (official.md §4).

Two levels at the same resolution (the level change is LayerNorm + 1x1 conv); every AttnBlock attends
from the image tokens to themselves plus the condition tokens: the mapped CLIP text hidden states, then
c_clip_seq tokens from the pooled text embedding, then c_clip_seq per CLIP image embedding.
"""
import torch
from torch import nn

from .fp16_rescale import RescaledStream
from .trunk import CascadeUNet, ControlResiduals


class UpDownBlock2d(nn.Module):
    """1x1 conv between level widths, with an optional bilinear 2x resampling (off in every released model)."""

    def __init__(self, c_in, c_out, mode, enabled=True, *, dtype=None, device=None, operations=nn):
        super().__init__()
        if mode not in ("up", "down"):
            raise ValueError(f"UpDownBlock2d mode must be 'up' or 'down', got {mode!r}")
        resample = (nn.Upsample(scale_factor=2 if mode == "up" else 0.5, mode="bilinear", align_corners=True)
                    if enabled else nn.Identity())
        mapping = operations.Conv2d(c_in, c_out, kernel_size=1, dtype=dtype, device=device)
        self.blocks = nn.ModuleList([resample, mapping] if mode == "up" else [mapping, resample])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _as_token_sequence(embedding):
    """[B, C] -> [B, 1, C]; [B, n, C] unchanged."""
    return embedding.unsqueeze(1) if embedding.dim() == 2 else embedding


class StageC(CascadeUNet):
    def __init__(self, c_in=16, c_out=16, c_r=64, patch_size=1, c_cond=2048, c_hidden=[2048, 2048],
                 nhead=[32, 32], blocks=[[8, 24], [24, 8]], block_repeat=[[1, 1], [1, 1]],
                 level_config=["CTA", "CTA"], c_clip_text=1280, c_clip_text_pooled=1280, c_clip_img=768,
                 c_clip_seq=4, kernel_size=3, dropout=[0.1, 0.1], self_attn=True, t_conds=["sca", "crp"],
                 switch_level=[False], *, dtype=None, device=None, operations=None):
        super().__init__()
        operations = operations if operations is not None else nn
        self.c_clip_seq = c_clip_seq
        # Per-block factors from fp16_rescale.calibrate_block_scales; with them, fp16 runs rescaled.
        self.fp16_block_scales = None

        # Conditioning: every CLIP input becomes tokens of width c_cond.
        self.clip_txt_mapper = operations.Linear(c_clip_text, c_cond, dtype=dtype, device=device)
        self.clip_txt_pooled_mapper = operations.Linear(c_clip_text_pooled, c_cond * c_clip_seq,
                                                        dtype=dtype, device=device)
        self.clip_img_mapper = operations.Linear(c_clip_img, c_cond * c_clip_seq, dtype=dtype, device=device)
        self.clip_norm = operations.LayerNorm(c_cond, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)

        def make_level_change(mode):
            def make(c_from, c_to, level):
                return UpDownBlock2d(c_from, c_to, mode=mode, enabled=switch_level[level - 1],
                                     dtype=dtype, device=device, operations=operations)
            return make

        self._build_trunk(
            c_in=c_in, c_out=c_out, c_r=c_r, patch_size=patch_size, c_cond=c_cond, c_hidden=c_hidden,
            nhead=nhead, blocks=blocks, block_repeat=block_repeat, level_config=level_config,
            kernel_size=kernel_size, dropout=dropout, self_attn=self_attn, t_conds=t_conds,
            make_downscaler=make_level_change("down"), make_upscaler=make_level_change("up"),
            dtype=dtype, device=device, operations=operations,
        )

    def gen_c_embeddings(self, clip_text, clip_text_pooled, clip_img):
        """The condition token sequence [B, 77 + 4*n_pooled + 4*n_img, c_cond], layer-normalised."""
        text_tokens = self.clip_txt_mapper(clip_text)
        pooled = _as_token_sequence(clip_text_pooled)
        pooled_tokens = self.clip_txt_pooled_mapper(pooled).view(pooled.size(0), pooled.size(1) * self.c_clip_seq, -1)
        image = _as_token_sequence(clip_img)
        image_tokens = self.clip_img_mapper(image).view(image.size(0), image.size(1) * self.c_clip_seq, -1)
        return self.clip_norm(torch.cat([text_tokens, pooled_tokens, image_tokens], dim=1))

    def forward(self, x, r, clip_text, clip_text_pooled, clip_img, sca=None, crp=None, cnet=None, control=None,
                stream=None, **kwargs):
        """x [B,16,h,w] noised latent, r [B] noise level -> [B,16,h,w] prediction.

        ControlNet residuals come either as `cnet` (the original convention: a list with one entry per
        ResBlock call, None where nothing is added) or as the host's `control` dict, whose "input" list
        is consumed from its end. Other keyword arguments (the host's `context`, `transformer_options`,
        ...) are ignored, apart from values for extra `t_conds`. In fp16 with `fp16_block_scales` set, the
        residual stream is carried rescaled (fp16_rescale.py); `stream` overrides that choice.
        """
        r_embed = self.noise_level_embeddings(r, dict(kwargs, sca=sca, crp=crp)).to(x.dtype)
        cond_tokens = self.gen_c_embeddings(clip_text.to(x.dtype), clip_text_pooled.to(x.dtype), clip_img.to(x.dtype))
        host_residuals = None
        if control is not None and control.get("input") is not None:
            host_residuals = reversed(control["input"])
        residuals = ControlResiduals(cnet, host_residuals)
        if stream is None and x.dtype == torch.float16 and self.fp16_block_scales is not None:
            stream = RescaledStream(self.fp16_block_scales)
        return self._down_and_up(self.embedding(x), r_embed, cond_tokens, residuals, stream)

