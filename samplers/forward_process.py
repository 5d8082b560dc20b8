"""GDF's forward process for training: noise a clean latent and say what the network must predict.

    eps        ~ N(0, I)                                       (first draw)
    t          = clamp(1 - U + 0.001, 0.001, 1),  U ~ U[0, 1)  (second draw, one per sample; unless given)
    logSNR     = schedule(t, shift)
    a, b       = sqrt(sigmoid(logSNR)), sqrt(1 - sigmoid(logSNR))
    x_t        = a * x0 + b * eps
    target     = eps                                           (epsilon target)
    r          = noise_condition(logSNR)                       (what the network receives)
    loss_weight= P2(logSNR, loss_shift)                        (or any weight function of logSNR)

Same order of results as the original `GDF.diffuse`.
"""
from collections import namedtuple

import torch

from .loss_weights import p2_loss_weight
from .noise_condition import noise_condition
from .scaler import vp_scalers
from .schedule import logSNR as schedule_logSNR
from .targets import epsilon_target

Diffused = namedtuple("Diffused", "noised noise target logSNR r loss_weight")


def training_times(batch_size, generator=None):
    """The original's training draw of t: (1 - U) + 0.001, clamped to [0.001, 1]."""
    uniform = torch.rand(batch_size, generator=generator, dtype=torch.float32)
    return (1 - uniform).add(0.001).clamp(0.001, 1.0)


def diffuse(x0, noise=None, t=None, generator=None, shift=1.0, loss_shift=1.0, loss_weight=p2_loss_weight):
    """Noise x0 [B, ...] at times t (drawn when None); returns a `Diffused` of float32 tensors on x0's device.

    Random draws come from the CPU `generator` (noise first, then t), so a seed noises the same way on
    any device.
    """
    x0 = x0.float()
    batch = x0.shape[0]
    if noise is None:
        noise = torch.randn(tuple(x0.shape), generator=generator, dtype=torch.float32)
    noise = noise.to(x0.device, torch.float32)
    t = training_times(batch, generator) if t is None else torch.as_tensor(t, dtype=torch.float32)
    t = t.expand(batch) if t.dim() == 0 else t
    logSNR = schedule_logSNR(t, shift).to(x0.device)
    a, b = vp_scalers(logSNR)
    per_sample = (-1,) + (1,) * (x0.dim() - 1)
    noised = x0 * a.view(per_sample) + noise * b.view(per_sample)
    target = epsilon_target(x0, noise)
    return Diffused(noised, noise, target, logSNR, noise_condition(logSNR), loss_weight(logSNR, shift=loss_shift))
