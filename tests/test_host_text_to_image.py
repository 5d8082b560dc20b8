"""Text-to-image through the real host: the bundled workflow, queued exactly as users queue it.

The models are tiny seeded stand-ins written in the released layout (devtools/standin_models.py)
and a seeded random CLIP-G, so the pictures are noise; what is tested is that every node, loader,
sampler and decoder works in the host and that sizes, seeds, progress, previews and interrupts
behave as a user expects.
"""
import copy
import json
import time

import numpy as np
import pytest
from devtools.host_server import PromptRejected

STAGE_C_SAMPLER, STAGE_B_SAMPLER, LATENTS, SAVE = "9", "10", "8", "12"


def run_ok(host_server, prompt, timeout=600):
    result = host_server.run_prompt(prompt, timeout=timeout)
    assert result.error is None, f"the prompt failed: {result.error}"
    return result


def fresh_run(host_server, prompt):
    """Runs the prompt with the host's caches emptied first, so every node really executes."""
    host_server.request("POST", "/free", {"unload_models": True, "free_memory": True})
    return run_ok(host_server, prompt)


def pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("width,height,batch", [(256, 256, 1), (384, 256, 1), (256, 320, 2)])
def test_png_size_and_count(host_server, workflow, width, height, batch):
    workflow[LATENTS]["inputs"].update(width=width, height=height, batch_size=batch)
    images = host_server.output_images(run_ok(host_server, workflow))
    assert len(images) == batch
    for image in images:
        assert image.format == "PNG"
        assert image.size == (width, height)


def test_same_seed_same_image_other_seed_other_image(host_server, workflow):
    first = pixels(host_server.output_images(fresh_run(host_server, workflow))[0])
    again = pixels(host_server.output_images(fresh_run(host_server, workflow))[0])
    assert np.array_equal(first, again), "the same seed gave a different image"

    other = copy.deepcopy(workflow)
    other[STAGE_C_SAMPLER]["inputs"]["seed"] += 1
    other[STAGE_B_SAMPLER]["inputs"]["seed"] += 1
    different = pixels(host_server.output_images(run_ok(host_server, other))[0])
    assert np.abs(first - different).mean() > 1.0, "another seed gave the same image"


def test_progress_and_previewer_previews_during_stage_c(host_server, workflow):
    workflow[STAGE_C_SAMPLER]["inputs"]["steps"] = 4
    workflow[STAGE_C_SAMPLER]["inputs"]["seed"] = 7  # not cached by an earlier test
    result = run_ok(host_server, workflow)
    stage_c_progress = [p for p in result.progress if p.get("node") == STAGE_C_SAMPLER]
    assert [p["value"] for p in stage_c_progress] == [1, 2, 3, 4]
    assert all(p["max"] == 4 for p in stage_c_progress)
    stage_b_progress = [p for p in result.progress if p.get("node") == STAGE_B_SAMPLER]
    assert [p["value"] for p in stage_b_progress] == [1, 2]
    # The host's own previews are off by default (--preview-method none), so every preview that
    # arrives is the Previewer's: one per Stage C step, none for Stage B.
    from PIL import Image
    import io

    previews = [Image.open(io.BytesIO(data)) for data in result.previews]
    assert len(previews) == 4, f"expected one Previewer image per Stage C step, got {len(previews)}"
    assert all(p.width == p.height for p in previews)


def test_interrupt_stops_a_long_run_and_the_next_prompt_works(host_server, workflow):
    long = copy.deepcopy(workflow)
    long[STAGE_C_SAMPLER]["inputs"].update(steps=1000, seed=99)
    long[LATENTS]["inputs"].update(width=2048, height=2048)  # slow enough steps that 1000 cannot finish first
    with host_server.client() as client:
        prompt_id = client.queue(long)
        client.wait_for(lambda m: m.type == "progress" and m.data.get("node") == STAGE_C_SAMPLER, timeout=300)
        asked = time.monotonic()
        host_server.interrupt()
        result = client.wait_done(prompt_id, timeout=120)
        stopped_after = time.monotonic() - asked
    assert result.of_type("execution_interrupted"), "the run was not interrupted"
    steps_done = max(p["value"] for p in result.progress if p.get("node") == STAGE_C_SAMPLER)
    assert steps_done < 1000
    assert stopped_after < 10, f"stopping took {stopped_after:.1f} s: the sampler should stop within a step"
    assert host_server.output_images(run_ok(host_server, workflow))


def test_wrong_file_in_a_loader_is_a_clear_error_and_the_host_keeps_serving(host_server, workflow, standin_names):
    workflow["1"]["inputs"]["unet_name"] = standin_names["stage_b"]
    result = host_server.run_prompt(workflow)
    assert result.error is not None
    message = result.error["exception_message"]
    assert standin_names["stage_b"] in message and "Stage B" in message and "Load Stage B Decoder (Stable Cascade)" in message
    assert result.error["node_id"] == "1"
    assert host_server.is_serving()


def test_missing_file_is_refused_before_running(host_server, workflow):
    workflow["2"]["inputs"]["unet_name"] = "no_such_stage_b.safetensors"
    with pytest.raises(PromptRejected) as rejected:
        host_server.queue_prompt(workflow)
    assert "2" in rejected.value.node_errors
    assert host_server.is_serving()


def test_odd_size_is_refused_with_the_nearest_sizes(host_server, workflow):
    workflow[LATENTS]["inputs"]["width"] = 1001
    with pytest.raises(PromptRejected) as rejected:
        host_server.queue_prompt(workflow)
    details = json.dumps(rejected.value.node_errors[LATENTS])
    assert "1000 or 1008" in details


def test_our_models_work_in_the_hosts_ksampler(host_server, workflow):
    """Our Stage C/B MODELs and Stage A VAE in the host's own native Stable Cascade graph."""
    workflow["14"] = {"class_type": "ModelSamplingStableCascade", "inputs": {"model": ["1", 0], "shift": 2.0}}
    workflow[STAGE_C_SAMPLER] = {"class_type": "KSampler", "inputs": {
        "model": ["14", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": [LATENTS, 0], "seed": 1,
        "steps": 2, "cfg": 4.0, "sampler_name": "euler_ancestral", "scheduler": "simple", "denoise": 1.0}}
    workflow["13"] = {"class_type": "StableCascade_StageB_Conditioning", "inputs": {
        "conditioning": ["6", 0], "stage_c": [STAGE_C_SAMPLER, 0]}}
    workflow[STAGE_B_SAMPLER] = {"class_type": "KSampler", "inputs": {
        "model": ["2", 0], "positive": ["13", 0], "negative": ["7", 0], "latent_image": [LATENTS, 1], "seed": 1,
        "steps": 2, "cfg": 1.1, "sampler_name": "euler_ancestral", "scheduler": "simple", "denoise": 1.0}}
    workflow["11"] = {"class_type": "VAEDecode", "inputs": {"samples": [STAGE_B_SAMPLER, 0], "vae": ["3", 0]}}
    images = host_server.output_images(run_ok(host_server, workflow))
    assert images[0].size == (256, 256)
