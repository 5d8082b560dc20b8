"""Pure PyTorch GDF (Generalized Diffusion Framework) sampler, as in the original release.

One module per piece of the math, composed by the loop in `gdf.py`:
schedule.py (t -> logSNR, cosine, shift), scaler.py (logSNR -> a, b), noise_condition.py
(logSNR -> the network's r), steps.py (DDPM / DDIM / LCM updates), guidance.py (CFG + rescale),
gdf.py (`sample`, `sample_steps`, `diffuse`, `noise_levels`); for training: targets.py (epsilon),
loss_weights.py (P2, adaptive), forward_process.py (`diffuse` as GDF's: noised, noise, target,
logSNR, r, loss weight). torch only; no host imports.
"""
