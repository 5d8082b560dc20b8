"""The ControlNet example workflows through the real host, on tiny seeded stand-ins: each bundled
workflow runs and gives a picture of the chosen size; the canny
control also runs in the host's own KSampler; bad inputs are clear errors and the server keeps serving."""
import json

import numpy as np
import pytest
from conftest import REPO_ROOT
from devtools import standin_controlnets, standin_models
from PIL import Image

EXAMPLES = REPO_ROOT / "example_workflows"
CLIP, LATENTS, STAGE_C_SAMPLER, STAGE_B_SAMPLER, LOAD_IMAGE, CONTROLNET, APPLY = "5", "8", "9", "10", "13", "14", "15"
PICTURE, OTHER_PICTURE = "cn_test_picture.png", "cn_test_other_size.png"
MASKED = (slice(64, 160), slice(80, 176))


@pytest.fixture(scope="module")
def models(host_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cn_standins")
    written = standin_models.write_standin_models(folder)
    written.update(standin_controlnets.write_standin_controlnets(folder))
    names = {role: host_server.add_model(path.parent.name, path) for role, path in written.items()}
    names["stage_c_as_controlnet"] = host_server.add_model("controlnet", written["stage_c"], name="stage_c_by_mistake.safetensors")
    return names


@pytest.fixture(scope="module")
def pictures(host_server):
    """A 256x256 RGBA picture whose transparent square becomes LoadImage's MASK, and one of another size."""
    rng = np.random.default_rng(0)
    rgba = np.concatenate([rng.integers(0, 256, (256, 256, 3)), np.full((256, 256, 1), 255)], axis=2).astype(np.uint8)
    rgba[(*MASKED, 3)] = 0
    Image.fromarray(rgba, "RGBA").save(host_server.input_dir / PICTURE)
    Image.fromarray(rgba[:128, :160]).save(host_server.input_dir / OTHER_PICTURE)
    return PICTURE


@pytest.fixture(scope="module")
def object_info(host_server):
    return host_server.object_info()


def small_prompt(name, object_info, models, host_clip_g, pictures, width=256, height=256):
    """The bundled workflow's API twin (tests/test_editor_browser.py checks the template exports to it), made small."""
    prompt = json.loads((EXAMPLES / "api" / f"{name}_api.json").read_text())
    prompt[CLIP]["inputs"]["clip_name"] = host_clip_g
    prompt[LOAD_IMAGE]["inputs"]["image"] = pictures
    prompt[LATENTS]["inputs"].update(width=width, height=height)
    prompt[STAGE_C_SAMPLER]["inputs"]["steps"] = 2
    prompt[STAGE_B_SAMPLER]["inputs"]["steps"] = 2
    return prompt


def run_ok(host_server, prompt):
    result = host_server.run_prompt(prompt, timeout=900)
    assert result.error is None, f"the prompt failed: {result.error}"
    return host_server.output_images(result)


@pytest.mark.parametrize("name,size", [
    ("controlnet_canny", (256, 256)),
    ("controlnet_inpaint", (256, 256)),
    ("controlnet_outpaint", (320, 256)),
    # 256 px -> an 8x8 EfficientNet latent -> the 16x16 Stage C latent of a 680x680 picture
    ("controlnet_super_resolution", (680, 680)),
])
def test_example_workflow_runs(host_server, object_info, models, host_clip_g, pictures, name, size):
    prompt = small_prompt(name, object_info, models, host_clip_g, pictures, *size)
    if name == "controlnet_outpaint":
        prompt["16"]["inputs"].update(left=64, right=64)
    images = run_ok(host_server, prompt)
    assert len(images) == 1 and images[0].size == size


def test_inpaint_result_keeps_the_original_outside_the_mask(host_server, object_info, models, host_clip_g, pictures):
    prompt = small_prompt("controlnet_inpaint", object_info, models, host_clip_g, pictures, 256, 256)
    image = np.asarray(run_ok(host_server, prompt)[0].convert("RGB"), dtype=np.int16)
    original = np.asarray(Image.open(host_server.input_dir / PICTURE).convert("RGB"), dtype=np.int16)
    outside = np.ones((256, 256), bool)
    outside[MASKED] = False
    assert np.abs(image[outside] - original[outside]).max() <= 1
    assert np.abs(image[~outside] - original[~outside]).mean() > 5


def test_canny_control_in_the_hosts_ksampler(host_server, object_info, models, host_clip_g, pictures):
    prompt = small_prompt("controlnet_canny", object_info, models, host_clip_g, pictures)
    prompt["20"] = {"class_type": "ModelSamplingStableCascade", "inputs": {"model": ["1", 0], "shift": 2.0}}
    prompt[STAGE_C_SAMPLER] = {"class_type": "KSampler", "inputs": {
        "model": ["20", 0], "positive": [APPLY, 0], "negative": [APPLY, 1], "latent_image": [LATENTS, 0], "seed": 1,
        "steps": 2, "cfg": 4.0, "sampler_name": "euler_ancestral", "scheduler": "simple", "denoise": 1.0}}
    assert run_ok(host_server, prompt)[0].size == (256, 256)


def failing(host_server, prompt, node_id):
    result = host_server.run_prompt(prompt, timeout=900)
    assert result.error is not None, "the prompt should have failed"
    assert result.error["node_id"] == node_id, result.error
    assert host_server.is_serving()
    return result.error["exception_message"]


def test_bad_inputs_are_clear_errors_and_the_host_keeps_serving(host_server, object_info, models, host_clip_g, pictures):
    inpaint = small_prompt("controlnet_inpaint", object_info, models, host_clip_g, pictures)
    inpaint["30"] = {"class_type": "LoadImage", "inputs": {"image": OTHER_PICTURE}}
    inpaint[APPLY]["inputs"]["mask"] = ["30", 1]
    assert "'mask' is 160x128 but 'image' is 256x256" in failing(host_server, inpaint, APPLY)

    canny = small_prompt("controlnet_canny", object_info, models, host_clip_g, pictures)
    canny["30"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": [LOAD_IMAGE, 0], "alpha": [LOAD_IMAGE, 1]}}
    canny[APPLY]["inputs"]["image"] = ["30", 0]
    assert "canny ControlNet takes an RGB image, but 'image' has 4 channels" in failing(host_server, canny, APPLY)

    wrong_file = small_prompt("controlnet_canny", object_info, models, host_clip_g, pictures)
    wrong_file[CONTROLNET]["inputs"]["control_net_name"] = models["stage_c_as_controlnet"]
    message = failing(host_server, wrong_file, CONTROLNET)
    assert "stage_c_by_mistake.safetensors is a Stage C" in message and "Load Stage C Prior (Stable Cascade)" in message

    assert run_ok(host_server, small_prompt("controlnet_canny", object_info, models, host_clip_g, pictures))[0].size == (256, 256)
