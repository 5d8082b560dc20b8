"""Pure PyTorch Stable Cascade ControlNet and its preprocessing (canny, inpaint, super-resolution, face)."""
