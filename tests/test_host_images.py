"""Images in, through the real host: every image workflow the pack bundles, queued as users queue it
(tiny seeded stand-in models, a seeded random CLIP-G and CLIP ViT-L/14), on square and non-square
pictures; and the bad inputs of issue 13, each a clear error after which the host keeps serving."""
import copy
import json

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

from devtools import standin_clip_vision, standin_models
from devtools.host_server import PromptRejected

API = REPO_ROOT / "example_workflows" / "api"
CLIP_VISION_NAME = "clip_vit_large_patch14.safetensors"  # what image_variation_api.json names


@pytest.fixture(scope="module")
def models(host_server, tmp_path_factory, host_clip_g):
    written = standin_models.write_standin_models(tmp_path_factory.mktemp("standins"))
    for path in written.values():
        host_server.add_model(path.parent.name, path)
    vision = standin_clip_vision.standin_clip_vision_path()
    host_server.add_model("clip_vision", vision, name=CLIP_VISION_NAME)
    return {"clip_g": host_clip_g}


def input_picture(host_server, width, height, seed=0):
    """A picture with some structure, written to the host's input folder; its name for Load Image."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    name = f"picture_{width}x{height}_{seed}.png"
    coarse.save(host_server.input_dir / name)
    return name


def workflow(name, models, **image_names):
    """An API workflow with the CLIP-G stand-in, few steps, and these pictures in its Load Image nodes."""
    prompt = json.loads((API / f"{name}_api.json").read_text())
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "CLIPLoader":
            inputs["clip_name"] = models["clip_g"]
        if node["class_type"] == "LoadImage":
            inputs["image"] = image_names["image"]
        if node["class_type"] == "SCPack_StageCSampler":
            inputs["steps"] = 2
        if node["class_type"] == "SCPack_StageBSampler":
            inputs["steps"] = 2
    return prompt


def nodes_of(prompt, class_type):
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def run_ok(host_server, prompt):
    result = host_server.run_prompt(prompt)
    assert result.error is None, f"the prompt failed: {result.error}"
    return host_server.output_images(result)


@pytest.mark.parametrize("name", ["image_to_image", "reconstruction", "stage_a_reconstruction"])
@pytest.mark.parametrize("width,height", [(256, 256), (384, 264), (260, 300)])
def test_image_workflows_give_a_picture_of_the_input_size(host_server, models, name, width, height):
    prompt = workflow(name, models, image=input_picture(host_server, width, height))
    images = run_ok(host_server, prompt)
    assert len(images) == 1 and images[0].format == "PNG"
    assert images[0].size == (width - width % 8, height - height % 8)


@pytest.mark.parametrize("width,height", [(256, 256), (384, 256)])
def test_image_variation_runs_and_the_picture_matters(host_server, models, width, height):
    prompt = workflow("image_variation", models, image=input_picture(host_server, 320, 256, seed=1))
    latents = nodes_of(prompt, "SCPack_EmptyLatent")[0]
    prompt[latents]["inputs"].update(width=width, height=height)
    first = run_ok(host_server, prompt)
    assert len(first) == 1 and first[0].size == (width, height)
    other = copy.deepcopy(prompt)
    other[nodes_of(prompt, "LoadImage")[0]]["inputs"]["image"] = input_picture(host_server, 320, 256, seed=2)
    second = run_ok(host_server, other)
    # Same seeds: any change comes from the picture (tiny random models make it a small one).
    assert not np.array_equal(np.asarray(first[0]), np.asarray(second[0])), \
        "another picture gave the same variation: the image embedding did not reach Stage C"


@pytest.mark.parametrize("width,height", [(512, 288), (288, 512), (256, 256)])
def test_any_size_workflow_with_auto_compression(host_server, models, width, height):
    prompt = workflow("text_to_image_any_size", models)
    latents = nodes_of(prompt, "SCPack_EmptyLatent")[0]
    assert prompt[latents]["inputs"]["compression"] == "auto"
    prompt[latents]["inputs"].update(width=width, height=height)
    images = run_ok(host_server, prompt)
    assert images[0].size == (width, height)


# --- Bad inputs: clear errors, and the host keeps serving ---------------------------------------

def failing(host_server, prompt, node_id):
    result = host_server.run_prompt(prompt)
    assert result.error is not None, "the bad prompt ran"
    assert result.error["node_id"] == node_id
    assert host_server.is_serving()
    return result.error["exception_message"]


def img2img(host_server, models, width=256, height=256):
    prompt = workflow("image_to_image", models, image=input_picture(host_server, width, height))
    return prompt, nodes_of(prompt, "LoadImage")[0], nodes_of(prompt, "SCPack_StageCEncode")[0]


def test_a_mask_where_an_image_belongs_is_refused_before_running(host_server, models):
    prompt, load, encode = img2img(host_server, models)
    prompt[encode]["inputs"]["image"] = [load, 1]  # Load Image's MASK output
    with pytest.raises(PromptRejected) as rejected:
        host_server.queue_prompt(prompt)
    assert encode in rejected.value.node_errors
    assert "MASK" in json.dumps(rejected.value.node_errors[encode])
    assert host_server.is_serving()


def test_an_rgba_image_is_a_clear_error(host_server, models):
    prompt, load, encode = img2img(host_server, models)
    prompt["90"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": [load, 0], "alpha": [load, 1]}}
    prompt[encode]["inputs"]["image"] = ["90", 0]
    assert "4 channels (RGBA)" in failing(host_server, prompt, encode)


def test_an_image_too_small_for_the_encoder_is_a_clear_error(host_server, models):
    prompt, _, encode = img2img(host_server, models, 96, 64)
    assert "96x64, smaller than the 256 px per side" in failing(host_server, prompt, encode)


def test_mismatched_batches_are_a_clear_error(host_server, models):
    prompt, load, encode = img2img(host_server, models)
    prompt["90"] = {"class_type": "RepeatImageBatch", "inputs": {"image": [load, 0], "amount": 2}}
    prompt[encode]["inputs"]["image"] = ["90", 0]
    prompt["91"] = {"class_type": "SCPack_EmptyLatent", "inputs": {"width": 256, "height": 256, "batch_size": 3}}
    stage_b_sampler = nodes_of(prompt, "SCPack_StageBSampler")[0]
    prompt[stage_b_sampler]["inputs"]["stage_b"] = ["91", 1]
    assert "batch size 2 but the latent has 3" in failing(host_server, prompt, stage_b_sampler)


def test_a_stage_b_latent_where_a_stage_c_one_belongs_is_a_clear_error(host_server, models):
    prompt, _, encode = img2img(host_server, models)
    stage_c_sampler = nodes_of(prompt, "SCPack_StageCSampler")[0]
    prompt[stage_c_sampler]["inputs"]["stage_c"] = [encode, 1]
    message = failing(host_server, prompt, stage_c_sampler)
    assert "'stage_c' got a Stage B latent" in message and "Stage C Encode (Stable Cascade)" in message
    # and the host still runs a good prompt afterwards
    images = run_ok(host_server, img2img(host_server, models)[0])
    assert images[0].size == (256, 256)
