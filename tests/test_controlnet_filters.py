"""The control inputs against the original filters' outputs (../shared/fixtures/filters/, README §5):
canny in pure torch against real OpenCV, the inpainting hint and the saliency mask path exactly."""
import json

import pytest
import torch
from safetensors.torch import load_file

from stable_cascade_pack.controlnet.canny import canny_control, canny_edges
from stable_cascade_pack.controlnet.face import face_identity_map
from stable_cascade_pack.controlnet.inpaint import inpaint_control, saliency_mask
from stable_cascade_pack.controlnet.super_resolution import super_resolution_control


@pytest.fixture(scope="module")
def filters(fixtures_dir):
    folder = fixtures_dir / "filters"
    return json.loads((folder / "filters.json").read_text()), {
        "canny": load_file(folder / "canny.safetensors"), "inpaint": load_file(folder / "inpaint.safetensors")}


@pytest.mark.parametrize("case", ["canny_a", "canny_b"])
def test_canny_edges_agree_with_opencv(filters, case):
    meta, tensors = filters
    data = tensors["canny"]
    low, high = meta["canny"][case]["cv2_thresholds"]
    ours = canny_edges(data[f"{case}.cv2_in_u8"].permute(0, 3, 1, 2), low, high)[:, 0]
    opencv = data[f"{case}.cv2_edges_u8"] > 0
    agreement = (ours & opencv).sum().item() / opencv.sum().item()
    false_edges = (ours & ~opencv).sum().item()
    print(f"{case}: {agreement:.2%} of OpenCV's {opencv.sum().item()} edge pixels found, {false_edges} extra")
    assert agreement >= 0.95 and false_edges <= 0.05 * opencv.sum().item()
    # Measured on these fixtures: every pixel equal. Keep it so.
    assert torch.equal(ours, opencv)


@pytest.mark.parametrize("case", ["canny_a", "canny_b"])
def test_canny_control_matches_the_original_filter(filters, case):
    data = filters[1]["canny"]
    out = canny_control(data[f"{case}.input"])
    assert out.shape == data[f"{case}.output"].shape
    torch.testing.assert_close(out, data[f"{case}.output"], atol=1e-6, rtol=0)


def test_canny_refuses_rgba():
    with pytest.raises(ValueError, match=r"RGB images \[B,3,H,W\]; got shape \[1, 4, 8, 8\]"):
        canny_control(torch.rand(1, 4, 8, 8))


def test_inpaint_hint_with_user_mask_is_exact(filters):
    data = filters[1]["inpaint"]
    out = inpaint_control(data["inpaint_a.input"], data["inpaint_a.mask"].bool())
    assert torch.equal(out, data["inpaint_a.user_mask.output"])
    float_mask = inpaint_control(data["inpaint_a.input"], data["inpaint_a.mask"].float())
    assert torch.equal(float_mask, out)


@pytest.mark.parametrize("outpaint", [False, True])
def test_saliency_mask_is_exact(filters, outpaint):
    meta, tensors = filters
    data = tensors["inpaint"]
    size = data["inpaint_a.input"].shape[-2:]
    mask = saliency_mask(data["inpaint_a.saliency.map"], size, meta["inpaint"]["inpaint_a"]["saliency_threshold"], outpaint)
    expected = data[f"inpaint_a.saliency.outpaint_{str(outpaint).lower()}.mask"].bool()
    assert torch.equal(mask, expected)


def test_inpaint_refuses_a_mask_of_another_size():
    with pytest.raises(ValueError, match="the mask is 6x5 but the image is 8x8"):
        inpaint_control(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 5, 6))


def test_super_resolution_input_is_the_latent_upsampled_twice():
    latent = torch.randn(1, 16, 3, 5)
    out = super_resolution_control(latent)
    assert out.shape == (1, 16, 6, 10)
    assert torch.equal(out[..., ::2, ::2], latent) and torch.equal(out[..., 1::2, 1::2], latent)
    with pytest.raises(ValueError, match="16-channel EfficientNet latent"):
        super_resolution_control(torch.randn(1, 3, 8, 8))


def test_face_identity_map_places_normalised_embeddings_in_boxes():
    embedding = torch.arange(512, dtype=torch.float32)
    face_map = face_identity_map([[((32, 64, 96, 128), embedding)], []], height=256, width=192)
    assert face_map.shape == (2, 512, 8, 6)
    inside = face_map[0, :, 2:4, 1:3]
    torch.testing.assert_close(inside, (embedding / embedding.norm()).view(-1, 1, 1).expand_as(inside))
    assert torch.count_nonzero(face_map[0]) == torch.count_nonzero(inside) and torch.count_nonzero(face_map[1]) == 0


def test_composite_keeps_the_original_outside_the_mask():
    from stable_cascade_pack.controlnet.inpaint import composite_outside_mask

    original = torch.rand(1, 3, 8, 8)
    generated = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1.0
    out = composite_outside_mask(generated, original, mask)
    assert out.shape == (1, 3, 16, 16)
    assert torch.equal(out[..., :6, :], generated[..., :6, :])
    resized = torch.nn.functional.interpolate(original, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[..., 10:, :], resized[..., 10:, :])
