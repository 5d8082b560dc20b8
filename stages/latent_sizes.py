"""How big the Stage C and Stage B latents of a picture are, and the compression that decides it.

The original fixes the Stage C compression at 42.67 (`calculate_latent_sizes`: 1024 px -> 24 latent
pixels, the EfficientNet's stride 32 on the picture scaled by 3/4). Stage C was trained on 24x24
latents; far from that token count (2048² -> 48x48, 512² -> 12x12) it repeats or loses content, so
`auto` picks the compression that keeps about 24x24 = 576 tokens at any size and aspect ratio.
The encoder node and the empty-latent node share these functions, so an encoded picture and an
empty latent of the same size always agree.
"""
import math

ORIGINAL_COMPRESSION = 42.67
TRAINED_STAGE_C_TOKENS = 24 * 24
STAGE_A_COMPRESSION = 4
ENCODER_STRIDE = 32  # EfficientNet-V2-S features: one latent pixel per 32x32 input pixels

COMPRESSION_MODES = ("original", "auto", "number")


def stage_c_compression(mode, number, width, height):
    """The Stage C compression (picture pixels per latent pixel, per side) for a picture size."""
    if mode == "original":
        return ORIGINAL_COMPRESSION
    if mode == "number":
        if not number > 0:
            raise ValueError(f"compression number must be positive, got {number}")
        return float(number)
    if mode == "auto":
        return math.sqrt(width * height / TRAINED_STAGE_C_TOKENS)
    raise ValueError(f"compression '{mode}' is not one of {', '.join(COMPRESSION_MODES)}")


def _ceil(value):
    # 1024 / (1024 / 24) is 24.000000000000004 in floating point: that must stay 24, not become 25.
    return math.ceil(round(value, 6))


def stage_c_size(width, height, compression):
    """[h, w] of the Stage C latent: the picture divided by the compression, rounded up (as the original)."""
    return _ceil(height / compression), _ceil(width / compression)


def stage_b_size(width, height):
    """[h, w] of the Stage B latent: the picture divided by Stage A's 4."""
    return height // STAGE_A_COMPRESSION, width // STAGE_A_COMPRESSION


def encoder_input_size(stage_c_hw):
    """[h, w] the EfficientNet must see to produce a Stage C latent of exactly this size."""
    return stage_c_hw[0] * ENCODER_STRIDE, stage_c_hw[1] * ENCODER_STRIDE
