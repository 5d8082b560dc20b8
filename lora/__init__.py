"""LoRA and learned-token formats for Stage C, their conversion to host weight patches, training."""
