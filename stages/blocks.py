"""Building blocks shared by Stage B and Stage C (the original `modules/common.py`).

Every Linear/Conv layer is built from `operations` (a namespace like `torch.nn`), so the host can hand
in its own layer classes (e.g. `comfy.ops.manual_cast`, whose layers cast their weights to the input's
dtype and device on each call). Raw parameters that are not part of such a layer are cast the same way
here, in `forward`, with `cast_like`.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def cast_like(tensor, x):
    """`tensor` in the dtype and on the device of `x` (weights may be stored in bf16 or offloaded)."""
    return tensor.to(dtype=x.dtype, device=x.device)


def noise_level_embedding(r, c_r, max_positions=10000):
    """Sinusoidal embedding of the noise level r in [0, 1] (the original `gen_r_embedding`): [B] -> [B, c_r]."""
    r = r * max_positions
    half_dim = c_r // 2
    frequencies = torch.arange(half_dim, device=r.device).float().mul(-math.log(max_positions) / (half_dim - 1)).exp()
    angles = r[:, None] * frequencies[None, :]
    embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
    if c_r % 2 == 1:
        embedding = F.pad(embedding, (0, 1), mode="constant")
    return embedding


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor; no learned affine (none of the released models has one)."""

    def __init__(self, channels, eps=1e-6, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.norm = operations.LayerNorm(channels, elementwise_affine=False, eps=eps, dtype=dtype, device=device)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose statistics and affine follow the input's dtype and device in inference.

    The host's `operations` namespaces have no BatchNorm, so this is where bf16-stored or offloaded
    Stage A / EfficientNet / Previewer weights meet an input of another dtype or device.
    """

    def forward(self, x):
        if self.training:
            return super().forward(x)
        return F.batch_norm(
            x,
            cast_like(self.running_mean, x),
            cast_like(self.running_var, x),
            None if self.weight is None else cast_like(self.weight, x),
            None if self.bias is None else cast_like(self.bias, x),
            False,
            0.0,
            self.eps,
        )


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on an NHWC tensor: rescale each channel by its spatial L2 norm relative to the mean."""

    def __init__(self, dim, *, dtype=None, device=None):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim, dtype=dtype, device=device))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim, dtype=dtype, device=device))

    def forward(self, x):
        spatial_norm = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        relative_norm = spatial_norm / (spatial_norm.mean(dim=-1, keepdim=True) + 1e-6)
        return cast_like(self.gamma, x) * (x * relative_norm) + cast_like(self.beta, x) + x


def _channelwise_mlp(c_in, c, dropout, dtype, device, operations):
    """Linear(c_in, 4c) -> GELU -> GRN -> Dropout -> Linear(4c, c), applied to NHWC tensors."""
    return nn.Sequential(
        operations.Linear(c_in, c * 4, dtype=dtype, device=device),
        nn.GELU(),
        GlobalResponseNorm(c * 4, dtype=dtype, device=device),
        nn.Dropout(dropout),
        operations.Linear(c * 4, c, dtype=dtype, device=device),
    )


class ResBlock(nn.Module):
    """Depthwise conv + channel MLP, residual; the first up-path block of a level also takes the skip."""

    def __init__(self, c, c_skip=0, kernel_size=3, dropout=0.0, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.depthwise = operations.Conv2d(
            c, c, kernel_size=kernel_size, padding=kernel_size // 2, groups=c, dtype=dtype, device=device
        )
        self.norm = LayerNorm2d(c, dtype=dtype, device=device, operations=operations)
        self.channelwise = _channelwise_mlp(c + c_skip, c, dropout, dtype, device, operations)

    def forward(self, x, skip=None):
        residual = x
        x = self.norm(self.depthwise(x))
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        x = self.channelwise(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x + residual


class FeedForwardBlock(nn.Module):
    """Channel MLP with a residual (letter 'F' in a level config; no released model uses it)."""

    def __init__(self, c, dropout=0.0, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.norm = LayerNorm2d(c, dtype=dtype, device=device, operations=operations)
        self.channelwise = _channelwise_mlp(c, c, dropout, dtype, device, operations)

    def forward(self, x):
        return x + self.channelwise(self.norm(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# Attention scores (batch x heads x queries x keys) one call may compute. Released models at their
# usual sizes stay below it (one call); at huge sizes the queries are split so that no single call
# runs for minutes: forward hooks on `core` (the host's interrupt check) then run between chunks.
MAX_SCORES_PER_CALL = 2**26


class ScaledDotProductAttention(nn.Module):
    """softmax(q k^T / sqrt(d)) v, as a module so that hooks can run between query chunks."""

    def forward(self, q, k, v, dropout_p=0.0):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)


class MultiHeadAttention(nn.Module):
    """nn.MultiheadAttention's math with separate q/k/v projections (the pack layout of the weights)."""

    def __init__(self, c, nhead, dropout=0.0, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.nhead = nhead
        self.dropout = dropout
        self.core = ScaledDotProductAttention()
        self.to_q = operations.Linear(c, c, bias=True, dtype=dtype, device=device)
        self.to_k = operations.Linear(c, c, bias=True, dtype=dtype, device=device)
        self.to_v = operations.Linear(c, c, bias=True, dtype=dtype, device=device)
        self.out_proj = operations.Linear(c, c, bias=True, dtype=dtype, device=device)

    def forward(self, queries, keys_values):
        def split_heads(tokens):  # [B, L, C] -> [B, nhead, L, C/nhead]
            return tokens.unflatten(-1, (self.nhead, -1)).transpose(1, 2)

        q = split_heads(self.to_q(queries))
        k = split_heads(self.to_k(keys_values))
        v = split_heads(self.to_v(keys_values))
        dropout_p = self.dropout if self.training else 0.0
        batch, heads, queries, _ = q.shape
        rows = max(1, MAX_SCORES_PER_CALL // (batch * heads * k.shape[-2]))
        if queries <= rows:
            out = self.core(q, k, v, dropout_p)
        else:  # each query's result depends on that query alone: chunks give the same numbers
            out = torch.cat([self.core(q[:, :, i:i + rows], k, v, dropout_p) for i in range(0, queries, rows)], dim=2)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class Attention2D(nn.Module):
    """Attention from the pixels of an NCHW map to condition tokens (and, with self_attn, to the pixels too)."""

    def __init__(self, c, nhead, dropout=0.0, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.attn = MultiHeadAttention(c, nhead, dropout, dtype=dtype, device=device, operations=operations)

    def forward(self, x, cond_tokens, self_attn=True):
        pixel_tokens = x.flatten(2).transpose(1, 2)  # [B, H*W, C]
        keys_values = torch.cat([pixel_tokens, cond_tokens], dim=1) if self_attn else cond_tokens
        out = self.attn(pixel_tokens, keys_values)
        return out.transpose(1, 2).reshape(x.shape)


class AttnBlock(nn.Module):
    """Pre-norm attention with a residual; the condition tokens are mapped to the level's width first."""

    def __init__(self, c, c_cond, nhead, self_attn=True, dropout=0.0, *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.self_attn = self_attn
        self.norm = LayerNorm2d(c, dtype=dtype, device=device, operations=operations)
        self.attention = Attention2D(c, nhead, dropout, dtype=dtype, device=device, operations=operations)
        self.kv_mapper = nn.Sequential(nn.SiLU(), operations.Linear(c_cond, c, dtype=dtype, device=device))

    def forward(self, x, cond_tokens):
        cond_tokens = self.kv_mapper(cond_tokens)
        return x + self.attention(self.norm(x), cond_tokens, self_attn=self.self_attn)


class TimestepBlock(nn.Module):
    """FiLM by the noise-level embedding: x * (1 + a) + b, with (a, b) summed over r and each extra t_cond."""

    def __init__(self, c, c_timestep, conds=("sca",), *, dtype=None, device=None, operations=nn):
        super().__init__()
        self.conds = list(conds)
        self.mapper = operations.Linear(c_timestep, c * 2, dtype=dtype, device=device)
        for name in self.conds:
            setattr(self, f"mapper_{name}", operations.Linear(c_timestep, c * 2, dtype=dtype, device=device))

    def film(self, r_embed):
        """(a, b), each [B, c, 1, 1]."""
        embeddings = r_embed.chunk(len(self.conds) + 1, dim=1)
        a, b = self.mapper(embeddings[0])[:, :, None, None].chunk(2, dim=1)
        for name, embedding in zip(self.conds, embeddings[1:]):
            a_cond, b_cond = getattr(self, f"mapper_{name}")(embedding)[:, :, None, None].chunk(2, dim=1)
            a, b = a + a_cond, b + b_cond
        return a, b

    def forward(self, x, r_embed):
        a, b = self.film(r_embed)
        return x * (1 + a) + b
