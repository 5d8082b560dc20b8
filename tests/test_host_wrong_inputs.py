"""Wrong inputs through the real host: every mistake gets the pack's message, then a good prompt runs.

Each case is the bundled workflow on tiny stand-ins with one wire or value changed, as a user (or
an API client) could change it. The bad prompts are queued together from one client, so the host
runs the shared upstream nodes (loaders, text encoding) once.
"""
import math
import re
import time

import pytest

from devtools.host_server import PromptRejected

STAGE_C_SAMPLER, STAGE_B_SAMPLER, DECODE = "9", "10", "11"
STAGE_A, STAGE_C_VAE, STAGE_C_MODEL, STAGE_B_MODEL, LATENTS = "3", "4", "1", "2", "8"


def rewire(node, input_name, value):
    def edit(prompt):
        prompt[node]["inputs"][input_name] = value
    return edit


def with_node(node_id, class_type, inputs, then):
    """Adds a host node and wires it somewhere."""
    def edit(prompt):
        prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        then(prompt)
    return edit


# (case, edit of the workflow, node that must fail, pattern its message must match)
EXECUTION_MISTAKES = [
    ("Stage C latent into stage_b", rewire(STAGE_B_SAMPLER, "stage_b", [LATENTS, 0]), STAGE_B_SAMPLER,
     r"Stage B Sampler \(Stable Cascade\): 'stage_b' got a Stage C latent \[1, 16, 6, 6\], but it needs a Stage B latent .*'Empty Latents \(Stable Cascade\)'"),
    ("Stage B latent into stage_c of Stage B", rewire(STAGE_B_SAMPLER, "stage_c", [LATENTS, 1]), STAGE_B_SAMPLER,
     r"'stage_c' got a Stage B latent .*\[1, 4, 64, 64\], but it needs a Stage C latent \(16 channels\)"),
    ("Stage B latent into the Stage C sampler", rewire(STAGE_C_SAMPLER, "stage_c", [LATENTS, 1]), STAGE_C_SAMPLER,
     r"Stage C Prior Sampler \(Stable Cascade\): 'stage_c' got a Stage B latent"),
    ("Stage C latent into Stage A Decode", rewire(DECODE, "stage_b", [STAGE_C_SAMPLER, 0]), DECODE,
     r"Stage A Decode \(Stable Cascade\): 'stage_b' got a Stage C latent"),
    ("Stage C VAE into Stage A Decode", rewire(DECODE, "stage_a", [STAGE_C_VAE, 0]), DECODE,
     r"Stage A Decode \(Stable Cascade\): 'stage_a' got a Stage C VAE .*, but it needs Stage A .*'Load Stage A VAE \(Stable Cascade\)'"),
    ("Stage B model into the Stage C sampler", rewire(STAGE_C_SAMPLER, "model", [STAGE_B_MODEL, 0]), STAGE_C_SAMPLER,
     r"'model' got a Stage B model, but it needs a Stage C model. Connect 'Load Stage C Prior \(Stable Cascade\)'"),
    ("Stage C model into the Stage B sampler", rewire(STAGE_B_SAMPLER, "model", [STAGE_C_MODEL, 0]), STAGE_B_SAMPLER,
     r"'model' got a Stage C model, but it needs a Stage B model"),
    ("SD latent (host EmptyLatentImage) into Stage C",
     with_node("20", "EmptyLatentImage", {"width": 256, "height": 256, "batch_size": 1},
               rewire(STAGE_C_SAMPLER, "stage_c", ["20", 0])), STAGE_C_SAMPLER,
     r"'stage_c' got a Stage B latent \(or an SD1/SDXL latent\) \[1, 4, 32, 32\]"),
    ("video latent into Stage C",
     with_node("20", "EmptyHunyuanLatentVideo", {"width": 256, "height": 256, "length": 5, "batch_size": 1},
               rewire(STAGE_C_SAMPLER, "stage_c", ["20", 0])), STAGE_C_SAMPLER,
     r"'stage_c' got a 5-D latent .* \(a video or audio latent\?\)"),
    ("a weight dtype the Stage C loader does not offer", rewire(STAGE_C_MODEL, "weight_dtype", "fp64"), STAGE_C_MODEL,
     r"Load Stage C Prior \(Stable Cascade\): weight_dtype: 'fp64' is not one of the choices"),
    *[(f"NaN {name} in {label}", rewire(node, name, math.nan), node, rf"{label} \(Stable Cascade\): '{name}' is nan; every number input needs a finite value")
      for node, label, names in ((STAGE_C_SAMPLER, "Stage C Prior Sampler", ("cfg", "shift", "cfg_rho", "eta", "denoise")),
                                 (STAGE_B_SAMPLER, "Stage B Sampler", ("cfg", "shift")))
      for name in names],
]


def run_all(host_server, prompts, timeout=900):
    """Queues every prompt from one client, then waits for each; returns their results in order."""
    with host_server.client() as client:
        ids = [client.queue(prompt) for prompt in prompts]
        return [client.wait_done(prompt_id, timeout=timeout) for prompt_id in ids]


def test_every_wiring_mistake_gets_the_packs_message_and_a_good_prompt_then_runs(host_server, workflow):
    import copy

    prompts = []
    for _, edit, _, _ in EXECUTION_MISTAKES:
        prompt = copy.deepcopy(workflow)
        edit(prompt)
        prompts.append(prompt)
    results = run_all(host_server, prompts)
    problems = []
    for (case, _, node, pattern), result in zip(EXECUTION_MISTAKES, results):
        error = result.error
        if error is None:
            problems.append(f"{case}: no error (outcome {result.outcome})")
        elif error["node_id"] != node or not re.search(pattern, error["exception_message"]):
            problems.append(f"{case}: node {error['node_id']} said {error['exception_type']}: {error['exception_message']}")
    assert not problems, "\n".join(problems)
    assert host_server.is_serving()
    good = host_server.run_prompt(workflow, timeout=600)
    assert good.outcome == "success", good.error
    assert host_server.output_images(good)[0].size == (256, 256)


def test_a_preview_vae_that_cannot_preview_falls_back_with_a_warning(host_server, workflow):
    workflow[STAGE_C_SAMPLER]["inputs"]["preview_vae"] = [STAGE_A, 0]
    workflow[STAGE_C_SAMPLER]["inputs"]["seed"] = 123  # not cached by another test
    result = host_server.run_prompt(workflow, timeout=600)
    assert result.outcome == "success", result.error
    assert "previews fall back to ComfyUI's own: Stage C Prior Sampler (Stable Cascade): 'preview_vae' got a Stage A VAE" in host_server.log_text()


def test_a_size_far_beyond_the_memory_is_refused_with_one_that_fits(host_server, workflow):
    # A 16-channel latent as large as the host's nodes make (EmptySD3LatentImage, 16384x16384 ->
    # 2048x2048); the batch makes the tiny Stage C's activations at least twice this machine's RAM.
    ram_total = host_server.get_json("/system_stats")["system"]["ram_total"]
    bytes_per_item = 2 * 2048 * 2048 * 64 * 20 * 4  # CFG batch x pixels x width x (3 per level x 2 + 14) x fp32
    batch = max(1, math.ceil(2 * ram_total / bytes_per_item))
    workflow["20"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 16384, "height": 16384, "batch_size": batch}}
    workflow[STAGE_C_SAMPLER]["inputs"]["stage_c"] = ["20", 0]
    started = time.monotonic()
    result = host_server.run_prompt(workflow, timeout=300)
    assert result.error is not None and result.error["node_id"] == STAGE_C_SAMPLER, result.outcome
    message = result.error["exception_message"]
    assert re.search(r"Stage C sampling at about \d+x\d+ \(batch \d+\) needs about [\d.]+ GiB of memory, but only "
                     r"[\d.]+ GiB is available on this machine. The largest picture that fits is about \d+x\d+", message), message
    assert time.monotonic() - started < 120, "the refusal should come before any sampling"


def test_an_interrupt_lands_within_seconds_inside_a_huge_step(host_server, workflow):
    """16384x16384 on the tiny Stage C fits the memory but one step takes minutes (attention over
    147k tokens); the interrupt must not wait for the end of the step."""
    workflow["8"]["inputs"].update(width=16384, height=16384)
    workflow[STAGE_C_SAMPLER]["inputs"].update(steps=2, seed=77)
    with host_server.client() as client:
        prompt_id = client.queue(workflow)
        client.wait_for(lambda m: m.type == "executing" and isinstance(m.data, dict)
                        and m.data.get("node") == STAGE_C_SAMPLER, timeout=300)
        time.sleep(5)  # well inside the first step's network call
        asked = time.monotonic()
        host_server.interrupt()
        result = client.wait_done(prompt_id, timeout=300)
        stopped_after = time.monotonic() - asked
    assert result.outcome == "interrupted", [m.type for m in result.messages]
    assert not [p for p in result.progress if p.get("node") == STAGE_C_SAMPLER], "a whole step finished first"
    print(f"interrupt inside a 16384x16384 Stage C step landed after {stopped_after:.1f} s")
    # The same bound as the 2048x2048 interrupt test: one attention chunk or layer plus the host's own
    # clean-up, on a CPU that other test runs share (an uninterruptible step here takes minutes).
    assert stopped_after < 10, f"stopping took {stopped_after:.1f} s"
    assert host_server.is_serving()


def test_validation_messages_appear_once_under_their_input(host_server, workflow, standin_names):
    """What the host checks before running (0.3.75 files a node's message under every input its
    validate_inputs names, so each node validates only the inputs it can blame)."""
    cases = [
        (STAGE_C_MODEL, "unet_name", "no_such_stage_c.safetensors"),
        (STAGE_C_SAMPLER, "sampler", "euler"),
        (STAGE_B_SAMPLER, "cfg", math.inf),
    ]
    for node, name, value in cases:
        prompt = {k: {**v, "inputs": dict(v["inputs"])} for k, v in workflow.items()}
        prompt[node]["inputs"][name] = value
        with pytest.raises(PromptRejected) as rejected:
            host_server.queue_prompt(prompt)
        errors = rejected.value.node_errors[node]["errors"]
        assert [e["extra_info"]["input_name"] for e in errors] == [name], errors
