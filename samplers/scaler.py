"""Variance-preserving input scaler: x_t = a * x0 + b * eps with a^2 + b^2 = 1 and a^2/b^2 = SNR."""
import torch


def vp_scalers(logSNR):
    """(a, b) for a logSNR: a = sqrt(sigmoid(logSNR)), b = sqrt(1 - sigmoid(logSNR))."""
    a_squared = torch.as_tensor(logSNR, dtype=torch.float32).sigmoid()
    a = a_squared.sqrt()
    b = (1 - a_squared).sqrt()
    return a, b
