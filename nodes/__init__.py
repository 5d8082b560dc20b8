"""Host glue: the only package that imports ComfyUI."""
