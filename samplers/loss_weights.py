"""Per-sample loss weights of the diffusion objective, as functions of logSNR.

P2 (Choi et al., "Perception Prioritized Training"), the original's default for Stage C:

    w(logSNR) = (k + exp(s * logSNR)) ^ -gamma      (k = gamma = s = 1: w = 1 / (1 + SNR) = sigmoid(-logSNR))

Adaptive (the original's `adaptive_loss_weight: True`): logSNR is cut into buckets; each bucket
keeps an exponential moving average of the raw loss seen there and weighs new samples by its inverse,
so every noise level contributes about equally.

`shift` moves logSNR by 2*log(shift) before weighting (the original's `loss_shift`).
"""
import math

import torch


def _shifted(logSNR, shift):
    return logSNR + 2 * math.log(shift) if shift != 1 else logSNR


def p2_loss_weight(logSNR, shift=1.0, k=1.0, gamma=1.0, s=1.0):
    return (k + (_shifted(logSNR, shift) * s).exp()) ** -gamma


class AdaptiveLossWeight:
    def __init__(self, logSNR_range=(-10.0, 10.0), buckets=300, weight_range=(1e-7, 1e7)):
        self.bucket_edges = torch.linspace(logSNR_range[0], logSNR_range[1], buckets - 1)
        self.bucket_losses = torch.ones(buckets)
        self.weight_range = weight_range

    def _buckets(self, logSNR):
        return torch.searchsorted(self.bucket_edges, logSNR.detach().float().cpu())

    def __call__(self, logSNR, shift=1.0):
        buckets = self._buckets(_shifted(logSNR, shift))
        return (1 / self.bucket_losses[buckets]).clamp(*self.weight_range).to(logSNR.device)

    def update(self, logSNR, raw_loss, beta=0.99):
        """EMA of the unweighted per-sample loss in each sample's bucket."""
        buckets = self._buckets(logSNR)
        self.bucket_losses[buckets] = self.bucket_losses[buckets] * beta + raw_loss.detach().float().cpu() * (1 - beta)

    def state_dict(self):
        return {"bucket_edges": self.bucket_edges.clone(), "bucket_losses": self.bucket_losses.clone()}

    def load_state_dict(self, state):
        self.bucket_edges = state["bucket_edges"].clone().float()
        self.bucket_losses = state["bucket_losses"].clone().float()
