"""The Stage C LoRA trainer in the real host: train, load the LoRA with the host's LoraLoader, use the
learned token in a prompt, get every bad input's message at queue time, interrupt and resume.

Tiny stand-in models (devtools/standin_models.py) and the seeded random CLIP-G: what is tested is the
path through the host, not picture quality.
"""
import copy
import json

import numpy as np
import pytest
from conftest import REPO_ROOT
from devtools import standin_models
from devtools.host_server import PromptRejected
from PIL import Image
from safetensors import safe_open

WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "train_stage_c_lora_api.json"
TRAIN, LOSS_GRAPH = "20", "21"
TEXT_FRAME = 3


@pytest.fixture(scope="module")
def standins(host_server, host_clip_g, tmp_path_factory):
    written = standin_models.write_standin_models(
        tmp_path_factory.mktemp("standins"), roles=("stage_c", "effnet", "previewer"))
    names = {role: host_server.add_model(path.parent.name, path) for role, path in written.items()}
    names["clip_g"] = host_clip_g
    return names


def write_dataset(folder, captions, size=(80, 64), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, caption in enumerate(captions):
        pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"image_{i}.png")
        if caption is not None:
            (folder / f"image_{i}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("dataset"), ["a photo of [sks]", "[sks] on a table", "a red ball"])


def training_workflow(standins, dataset, **settings):
    prompt = json.loads(WORKFLOW.read_text())
    prompt["1"]["inputs"]["unet_name"] = standins["stage_c"]
    prompt["4"]["inputs"].update(encoder_name=standins["effnet"], previewer_name=standins["previewer"])
    prompt["5"]["inputs"]["clip_name"] = standins["clip_g"]
    prompt[TRAIN]["inputs"].update(dataset_folder=str(dataset), resolution=64, steps=4, learning_rate=0.01,
                                   save_every=2, preview_every=2, caption_dropout=0.0)
    prompt[TRAIN]["inputs"].update(settings)
    return prompt


def sampling_workflow(standins, lora_name, strength, text, loader="LoraLoaderModelOnly"):
    """Stage C through the host's LoraLoaderModelOnly; the sampled latent saved by the host's SaveLatent
    (the stand-in Previewer's pictures are nearly flat, the latent shows every change)."""
    lora_inputs = {"model": ["1", 0], "lora_name": lora_name, "strength_model": strength}
    if loader == "SCPack_StageCLoraLoader":
        lora_inputs.update(strength_clip=1.0, tokens="")
    return {
        "1": {"class_type": "SCPack_StageCLoader", "inputs": {"unet_name": standins["stage_c"], "weight_dtype": "default"}},
        "2": {"class_type": loader, "inputs": lora_inputs},
        "5": {"class_type": "CLIPLoader", "inputs": {"clip_name": standins["clip_g"], "type": "stable_cascade",
                                                     "device": "default"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["5", 0], "text": text}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["5", 0], "text": ""}},
        "8": {"class_type": "SCPack_EmptyLatent", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
        "9": {"class_type": "SCPack_StageCSampler", "inputs": {
            "model": ["2", 0], "positive": ["6", 0], "negative": ["7", 0], "stage_c": ["8", 0], "seed": 1, "steps": 2,
            "cfg": 4.0, "shift": 2.0, "cfg_rho": 0.7, "sampler": "ddpm", "eta": 0.0, "denoise": 1.0}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "lora_check"}},
    }


def run_ok(host_server, prompt, timeout=900):
    result = host_server.run_prompt(prompt, timeout=timeout)
    assert result.error is None, f"the prompt failed: {result.error}"
    assert result.outcome == "success"
    return result


def picture(host_server, prompt):
    """The Stage C latent the prompt sampled."""
    entry = run_ok(host_server, prompt).outputs["11"]["latents"][0]
    path = host_server.base_dir / "output" / entry.get("subfolder", "") / entry["filename"]
    with safe_open(str(path), framework="np") as handle:
        return handle.get_tensor("latent_tensor")


def training_info(path):
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["stable_cascade_training"]), list(handle.keys())


def test_trains_a_lora_the_host_loads_and_a_token_prompts_can_use(host_server, standins, dataset):
    prompt = training_workflow(standins, dataset, lora_name="trained_a", new_tokens="[sks] ^dog</w>")
    lora_file = host_server.models_dir("loras") / "trained_a.safetensors"
    token_file = host_server.models_dir("embeddings") / "sks.safetensors"
    for leftover in (lora_file, token_file):  # a rerun in the same base directory
        leftover.unlink(missing_ok=True)
    result = run_ok(host_server, prompt)

    progress = [p["value"] for p in result.progress if p.get("node") == TRAIN]
    assert max(progress) == 4
    assert result.previews, "no Previewer sample reached the progress bar"
    texts = [m.data["payload"] for m in result.of_type("binary") if m.data["event"] == TEXT_FRAME]
    assert any(b"step 4/4" in t and b"loss" in t for t in texts), "the loss did not reach the progress display"
    graphs = host_server.output_images(result)
    assert len(graphs) == 1 and graphs[0].size == (640, 360)

    info, keys = training_info(lora_file)
    assert info["steps_done"] == 4 and info["new_tokens"] == [["[sks]", "^dog</w>"]]
    assert keys and all(k.startswith("lora_prior_unet_") for k in keys)
    assert any(k.endswith("attention_attn_to_q.lora_down.weight") for k in keys)
    with safe_open(str(token_file), framework="pt") as handle:
        assert handle.get_tensor("clip_g").shape == (1, 1280)

    # The saved LoRA loads through the host's LoraLoader (every key used) and changes the output.
    log_before = len(host_server.log_text())
    without = picture(host_server, sampling_workflow(standins, "trained_a.safetensors", 0.0, "a red ball"))
    with_lora = picture(host_server, sampling_workflow(standins, "trained_a.safetensors", 1.0, "a red ball"))
    assert np.abs(with_lora - without).mean() > 1e-3, "the LoRA did not change the sampled latent"
    # The pack's own Load Stage C LoRA reads the file as a ComfyUI LoRA and applies the same change.
    with_pack_loader = picture(host_server, sampling_workflow(standins, "trained_a.safetensors", 1.0, "a red ball",
                                                              loader="SCPack_StageCLoraLoader"))
    np.testing.assert_allclose(with_pack_loader, with_lora, atol=1e-5, rtol=0)
    # The learned token is usable in a prompt: the host finds it and it changes the picture.
    with_token = picture(host_server, sampling_workflow(standins, "trained_a.safetensors", 1.0, "a photo of embedding:sks"))
    plain = picture(host_server, sampling_workflow(standins, "trained_a.safetensors", 1.0, "a photo of"))
    assert np.abs(with_token - plain).mean() > 1e-3, "the token did not change the sampled latent"
    log = host_server.log_text()[log_before:]
    assert "lora key not loaded" not in log and "embedding:sks does not exist" not in log


def rejection(host_server, prompt):
    with pytest.raises(PromptRejected) as rejected:
        host_server.queue_prompt(prompt)
    return json.dumps(rejected.value.node_errors)


def test_every_bad_input_is_refused_at_queue_time_with_its_message(host_server, standins, dataset, tmp_path):
    loras = host_server.models_dir("loras")
    (loras / "existing.safetensors").write_bytes(b"not really a lora")
    (loras / "a_file").write_text("in the way")
    embeddings = host_server.models_dir("embeddings")
    embeddings.mkdir(parents=True, exist_ok=True)
    (embeddings / "taken.safetensors").write_bytes(b"an embedding")
    empty = tmp_path / "empty"
    empty.mkdir()
    uncaptioned = write_dataset(tmp_path / "uncaptioned", ["a cat", None])
    broken = write_dataset(tmp_path / "broken", ["a cat"])
    (broken / "broken.png").write_bytes(b"these bytes are no PNG")
    (broken / "broken.txt").write_text("a broken picture")
    cases = [
        (dict(dataset_folder=str(tmp_path / "missing")), "does not exist"),
        (dict(dataset_folder=str(empty)), "has no images"),
        (dict(dataset_folder=str(uncaptioned)), "image_1.png"),
        (dict(dataset_folder=str(uncaptioned)), "have no caption"),
        (dict(dataset_folder=str(broken)), "broken.png"),
        (dict(dataset_folder=str(broken)), "cannot be read"),
        (dict(lora_name="no_such_folder/x"), "does not exist: create it first"),
        (dict(lora_name="a_file/x"), "is a file, not a folder"),
        (dict(lora_name="../escape"), "not a usable file name"),
        (dict(lora_name="existing"), "already exists"),
        (dict(lora_name="never_saved", resume=True), "no saved LoRA to continue"),
        (dict(batch_size=2, gradient_accumulation=4), "cannot be split into 4 equal micro-batches"),
        (dict(batch_size=8), "the dataset has only 3"),
        (dict(new_tokens="[taken] ^dog</w>"), "clashes with the existing embedding"),
        (dict(new_tokens="sks"), "wrapped in [...] or <...>"),
        (dict(new_tokens="[sks]\n[SKS]"), "listed twice"),
        (dict(new_tokens="[sks] ([unclosed"), "not a valid regular expression"),
        (dict(resolution=80), "multiple of 32"),
    ]
    problems = []
    for settings, expected in cases:
        prompt = training_workflow(standins, dataset, lora_name="bad_input_case")
        prompt[TRAIN]["inputs"].update(settings)
        try:
            message = rejection(host_server, prompt)
        except pytest.fail.Exception:
            problems.append(f"{settings}: was accepted")
            continue
        if expected not in message:
            problems.append(f"{settings}: expected {expected!r} in {message[:400]}")
    assert not problems, "\n".join(problems)
    assert not (loras / "bad_input_case.safetensors").exists()
    assert host_server.is_serving()


def test_host_dataset_lists_with_a_missing_caption_are_refused(host_server, standins, dataset):
    folder = write_dataset(host_server.base_dir / "input" / "uncaptioned_set", ["a cat", None])
    prompt = training_workflow(standins, dataset, lora_name="from_lists", dataset_folder="")
    prompt["30"] = {"class_type": "LoadImageTextDataSetFromFolder", "inputs": {"folder": folder.name}}
    prompt[TRAIN]["inputs"].update(images=["30", 0], captions=["30", 1])
    result = host_server.run_prompt(prompt, timeout=600)
    assert result.error is not None and "have no caption" in result.error["exception_message"]
    assert not (host_server.models_dir("loras") / "from_lists.safetensors").exists()


def test_interrupt_keeps_the_last_save_and_resume_continues(host_server, standins, dataset):
    long = training_workflow(standins, dataset, lora_name="interrupted", steps=100000, save_every=100000,
                             preview_every=0)
    with host_server.client() as client:
        prompt_id = client.queue(long)
        client.wait_for(lambda m: m.type == "progress" and m.data.get("node") == TRAIN and m.data["value"] >= 2,
                        timeout=600)
        host_server.interrupt()
        result = client.wait_done(prompt_id, timeout=120)
    assert result.of_type("execution_interrupted"), "the run was not interrupted"
    lora_file = host_server.models_dir("loras") / "interrupted.safetensors"
    info, _ = training_info(lora_file)
    done = info["steps_done"]
    assert 2 <= done < 100000
    reached = max(p["value"] for p in result.progress if p.get("node") == TRAIN)
    assert done == reached  # every finished update was kept

    resumed = copy.deepcopy(long)
    resumed[TRAIN]["inputs"].update(resume=True, steps=done + 2)
    result = run_ok(host_server, resumed)
    progress = [p["value"] for p in result.progress if p.get("node") == TRAIN]
    assert min(progress) == done and max(progress) == done + 2  # it went on from the saved step
    assert training_info(lora_file)[0]["steps_done"] == done + 2
