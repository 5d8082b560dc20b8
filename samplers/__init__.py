"""Pure PyTorch GDF (Generalized Diffusion Framework) sampler, as in the original release."""
