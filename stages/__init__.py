"""Pure PyTorch networks of the cascade and their checkpoint formats. Knows nothing of ComfyUI."""
