"""Stage C in fp16 without overflow, exactly: the residual stream carried times a power of two per block.

Stage C's hidden states grow past fp16's largest value (65504) in its last block group (the last
up-level), so plain fp16 gives inf/NaN and black images. Every block of the trunk adds a branch to
the stream, and every branch starts by normalising the stream (LayerNorm ignores a common factor,
up to its eps). So if the stream is carried as x' = s * x, with each branch's contribution scaled
by s too, nothing else changes and the output head (which starts with a LayerNorm) gives the same
result:

    ResBlock        x + last(mlp(norm(depthwise(x))))  ->  x' + last(s * h) + (s - 1) * bias(last)
                    where norm(depthwise(x)) = norm(depthwise(x') + (s - 1) * bias(depthwise))
    AttnBlock       x + attention(norm(x))             ->  x' + s * attention(norm(x'))
    TimestepBlock   x * (1 + a) + b                    ->  x' * (1 + a) + s * b
    ControlNet      x + residual                       ->  x' + s * residual
    repeat mapper   W x + b                            ->  W x' + s * b

Level changes start with a LayerNorm (the stream comes out at its true scale); a down level's
output is handed on at its true scale because the up path's skip enters a Linear directly (the
calibration checks that it fits). Weights are never touched: LoRA and the host's weight patches
act on the layers as usual, and `bias(layer)` is the layer's own output for a zero input, so it is
the bias as the host's casts and patches make it.

The factor of each block is a power of two (multiplying by it is exact in binary floating point),
chosen from a calibration forward in a safe dtype (fp32): the smallest scaling that keeps the
block's stream below TARGET_PEAK, which leaves 16x headroom to fp16's limit for other prompts,
sizes and noise levels than the calibration's.
"""
import math

import torch
from torch import nn

from .blocks import AttnBlock, FeedForwardBlock, ResBlock, TimestepBlock
from .trunk import PlainStream

FP16_MAX = 65504.0
TARGET_PEAK = 2.0 ** 12
# No activation of the rescaled network may exceed this in calibration (half of fp16's range).
VERIFY_LIMIT = 2.0 ** 15


class Fp16RescaleError(ValueError):
    """The network's activations cannot be brought inside fp16 by rescaling the stream."""


def layer_bias(layer, like):
    """What `layer` adds to a zero input: its bias after the host's casts and weight patches ([1, C])."""
    if isinstance(layer, nn.Conv2d):
        zero = like.new_zeros(1, layer.in_channels, 1, 1)
        return layer(zero)[:, :, :1, :1]
    return layer(like.new_zeros(1, layer.in_features))


def _peak(x):
    return x.detach().abs().max().item()


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def _nchw(x):
    return x.permute(0, 3, 1, 2)


class RescaledStream(PlainStream):
    """Runs the trunk on the stream times `block_scales[i]` during its i-th block call (execution order)."""

    def __init__(self, block_scales):
        self.block_scales = list(block_scales)
        self.calls = 0
        self.scale = 1.0

    def _enter_block(self, x):
        if self.calls >= len(self.block_scales):
            raise Fp16RescaleError(
                f"the fp16 block factors cover {len(self.block_scales)} block calls, but the network makes more: "
                "they were computed for another network; load the model again to recalibrate"
            )
        new_scale = self.block_scales[self.calls]
        self.calls += 1
        if new_scale != self.scale:
            x = x * (new_scale / self.scale)
            self.scale = new_scale
        return x

    def block(self, trunk, block, x, r_embed, cond_tokens, control, skip=None):
        x = self._enter_block(x)
        s = self.scale
        if s == 1.0:
            return super().block(trunk, block, x, r_embed, cond_tokens, control, skip)
        if isinstance(block, ResBlock):
            return self._res_block(block, control.add_next(x, scale=s), skip, s)
        if isinstance(block, AttnBlock):
            return x + s * block.attention(block.norm(x), block.kv_mapper(cond_tokens), self_attn=block.self_attn)
        if isinstance(block, TimestepBlock):
            a, b = block.film(r_embed)
            return x * (1 + a) + s * b
        if isinstance(block, FeedForwardBlock):
            return x + s * _nchw(block.channelwise(_nhwc(block.norm(x))))
        raise TypeError(f"no rescaled form for {type(block).__name__}")

    @staticmethod
    def _res_block(block, x, skip, s):
        features = block.depthwise(x)
        features = block.norm(features + (s - 1) * layer_bias(block.depthwise, features))
        if skip is not None:
            features = torch.cat([features, skip], dim=1)
        hidden, last = block.channelwise[:-1](_nhwc(features)), block.channelwise[-1]
        branch = last(hidden * s) + (s - 1) * layer_bias(last, hidden)
        return x + _nchw(branch)

    def repeat_mapper(self, mapper, x):
        return mapper(x) + (self.scale - 1) * layer_bias(mapper, x)

    def level_change(self, scaler, x):
        if isinstance(scaler, nn.Identity):
            return x
        self.scale = 1.0  # the level change starts with a LayerNorm: out comes the true scale
        return scaler(x)

    def level_output(self, x):
        x = x / self.scale
        self.scale = 1.0
        return x


class PeakRecorder(PlainStream):
    """A plain stream that notes the largest |value| around each block call and of each level output."""

    def __init__(self):
        self.block_peaks = []
        self.level_output_peaks = []

    def block(self, trunk, block, x, *args, **kwargs):
        out = super().block(trunk, block, x, *args, **kwargs)
        self.block_peaks.append(max(_peak(x), _peak(out)))
        return out

    def level_output(self, x):
        self.level_output_peaks.append(_peak(x))
        return x


def scales_for_peaks(block_peaks, target=TARGET_PEAK):
    """Per block: 2^-k for the smallest k >= 0 with peak * 2^-k <= target."""
    return [2.0 ** -max(0, math.ceil(math.log2(peak / target))) if peak > 0 else 1.0 for peak in block_peaks]


def calibration_inputs(network, noise_levels=(1.0, 0.6, 0.3, 0.05), size=8, seed=0, dtype=torch.float32, device="cpu"):
    """Stage C inputs for calibration: seeded noise latents at several noise levels, seeded text embeddings.

    The activations hardly depend on the inputs' magnitudes (the latent and the condition tokens are
    layer-normalised on the way in); they depend on the weights and the noise level r.
    """
    generator = torch.Generator().manual_seed(seed)
    batch = len(noise_levels)
    c_in = network.embedding[1].in_channels // network.embedding[0].downscale_factor ** 2
    patch = network.embedding[0].downscale_factor

    def draw(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    return dict(
        x=draw(batch, c_in, size * patch, size * patch),
        r=torch.tensor(noise_levels, dtype=torch.float32, device=device),
        clip_text=draw(batch, 77, network.clip_txt_mapper.in_features),
        clip_text_pooled=draw(batch, 1, network.clip_txt_pooled_mapper.in_features),
        clip_img=torch.zeros(batch, 1, network.clip_img_mapper.in_features, dtype=dtype, device=device),
    )


def _largest_module_output(network, run):
    """(peak, module name) over the outputs of every submodule while `run()` executes."""
    largest = [0.0, None]
    names = {module: name for name, module in network.named_modules()}

    def note(module, inputs, output):
        if torch.is_tensor(output) and output.is_floating_point() and output.numel():
            peak = _peak(output)
            if peak > largest[0]:
                largest[:] = [peak, names[module]]

    handles = [module.register_forward_hook(note) for module in names]
    try:
        output = run()
    finally:
        for handle in handles:
            handle.remove()
    return output, largest


@torch.no_grad()
def calibrate_block_scales(network, inputs, target=TARGET_PEAK):
    """The per-block-call factors that keep Stage C inside fp16, from forwards on `inputs` in their dtype
    (use fp32). Raises Fp16RescaleError when rescaling the stream cannot do it."""
    recorder = PeakRecorder()
    plain = network(**inputs, stream=recorder)
    if not all(math.isfinite(peak) for peak in recorder.block_peaks + recorder.level_output_peaks):
        raise Fp16RescaleError("the calibration forward in fp32 is not finite: the weights (as stored for this run) "
                               "hold inf or NaN, e.g. from converting values beyond fp16's range")
    too_large = [peak for peak in recorder.level_output_peaks if peak > VERIFY_LIMIT]
    if too_large:
        raise Fp16RescaleError(
            f"a level output reaches {max(too_large):.4g}; it feeds a skip connection at its true scale, "
            f"which fp16 cannot hold (limit used: {VERIFY_LIMIT:.0f}); run this model in bf16 or fp32"
        )
    block_scales = scales_for_peaks(recorder.block_peaks, target)

    rescaled, (peak, where) = _largest_module_output(
        network, lambda: network(**inputs, stream=RescaledStream(block_scales)))
    if not peak <= VERIFY_LIMIT:  # also catches NaN
        raise Fp16RescaleError(
            f"with the stream rescaled, the output of {where} still reaches {peak:.4g} (limit used: {VERIFY_LIMIT:.0f}): "
            "rescaling the residual stream cannot bring this model inside fp16; run it in bf16 or fp32"
        )
    difference = ((rescaled - plain).abs().max() / plain.abs().max().clamp_min(1e-12)).item()
    if difference > 1e-4:
        raise Fp16RescaleError(f"the rescaled network differs from the plain one by {difference:.2g} (relative) in calibration")
    return block_scales
