"""Soak: hundreds of prompts from two clients at once; successes, seconds per prompt, memory growth.

Starts the real host with the pack and the tiny stand-in models (devtools/standin_models.py, the
seeded CLIP-G stand-in), then two websocket clients queue the bundled text-to-image workflow at the
same time, each prompt with its own size and seeds, and a new text every TEXT_RUN prompts, and every
--bad-every'th prompt wired wrongly on purpose (a Stage C latent into the Stage B latent input):
those must fail with the pack's message while the others go on. Prints:

- successes, expected failures, unexpected outcomes;
- seconds per prompt (wall time of the whole run / prompts) and the median queue-to-end latency;
- the server's resident memory after a warm-up and at the end, and the growth per prompt.

    PY=~/.cache/stable-cascade-comfyui/venv/bin/python
    $PY benchmarks/bench_soak.py                  # 300 prompts, about 3-5 minutes on 2 cores
    $PY benchmarks/bench_soak.py --prompts 40     # a quick look

Not a test: the figures go into benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for the dev tooling, `devtools`
from devtools import host_server, standin_clip_g, standin_models  # noqa: E402

WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "text_to_image_api.json"
SIZES = [(256, 256), (320, 256), (256, 320), (384, 256), (256, 384), (320, 320)]
TEXTS = ["a lighthouse at dusk", "a red bicycle against a wall", "an owl in the snow", "a bowl of ramen",
         "a mountain lake, morning fog", "a city street in the rain"]
TEXT_RUN = 30  # prompts per text: encoding a text with the 0.7B CLIP-G stand-in costs more than a whole tiny sampling
WRONG_WIRE_MESSAGE = "'stage_b' got a Stage C latent"


def server_rss(server):
    with open(f"/proc/{server._proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def make_prompt(base, index, rng, bad):
    prompt = copy.deepcopy(base)
    width, height = SIZES[index % len(SIZES)]
    prompt["8"]["inputs"].update(width=width, height=height, batch_size=1)
    prompt["9"]["inputs"]["seed"] = rng.randrange(2**32)
    prompt["10"]["inputs"]["seed"] = rng.randrange(2**32)
    prompt["6"]["inputs"]["text"] = TEXTS[(index // TEXT_RUN) % len(TEXTS)]
    if bad:
        prompt["10"]["inputs"]["stage_b"] = ["8", 0]
    return prompt, (width, height)


def run_client(server, prompts, results, lock):
    """Queues all its prompts at once (as a busy user would), then follows each to its end."""
    with server.client() as client:
        queued = []
        for prompt, size, bad in prompts:
            queued.append((client.queue(prompt), time.monotonic(), size, bad))
        for prompt_id, at, size, bad in queued:
            result = client.wait_done(prompt_id, timeout=3600)
            latency = time.monotonic() - at
            with lock:
                results.append((result, latency, size, bad))


def classify(server, result, size, bad):
    if bad:
        message = (result.error or {}).get("exception_message", "")
        return "expected failure" if WRONG_WIRE_MESSAGE in message else f"unexpected: {result.outcome} {message[:200]}"
    if result.outcome != "success":
        return f"unexpected: {result.outcome} {(result.error or {}).get('exception_message', '')[:200]}"
    images = [entry for output in result.outputs.values() for entry in output.get("images", [])]
    if len(images) != 1:
        return f"unexpected: {len(images)} images"
    return "success"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300, help="prompts in all (split between the two clients)")
    parser.add_argument("--warmup", type=int, default=10, help="prompts run before the first memory reading")
    parser.add_argument("--bad-every", type=int, default=10, help="every Nth prompt is wired wrongly on purpose")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)

    rng = random.Random(args.seed)
    base = json.loads(WORKFLOW.read_text())
    base["9"]["inputs"]["steps"] = 2
    base["10"]["inputs"]["steps"] = 1
    base["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["11", 0]}}  # temp files, not output/

    with tempfile.TemporaryDirectory(prefix="sc_soak_") as scratch:
        server = host_server.HostServer(Path(scratch) / "host")
        models = standin_models.write_standin_models(Path(scratch) / "models", roles=("stage_c", "stage_b", "stage_a", "previewer"))
        base["1"]["inputs"]["unet_name"] = server.add_model("diffusion_models", models["stage_c"])
        base["2"]["inputs"]["unet_name"] = server.add_model("diffusion_models", models["stage_b"])
        base["3"]["inputs"]["vae_name"] = server.add_model("vae", models["stage_a"])
        base["4"]["inputs"]["previewer_name"] = server.add_model("vae", models["previewer"])
        base["5"]["inputs"]["clip_name"] = server.add_model("text_encoders", Path(standin_clip_g.standin_clip_g_path()))
        try:
            server.start(timeout=600)
            for index in range(args.warmup):
                prompt, _ = make_prompt(base, index, rng, bad=False)
                assert server.run_prompt(prompt, timeout=600).outcome == "success", "warm-up prompt failed"
            rss_start = server_rss(server)

            prompts = []
            for index in range(args.prompts):
                bad = index % args.bad_every == args.bad_every - 1
                prompts.append((*make_prompt(base, index, rng, bad), bad))
            results, lock = [], threading.Lock()
            halves = [prompts[0::2], prompts[1::2]]
            started = time.monotonic()
            threads = [threading.Thread(target=run_client, args=(server, half, results, lock)) for half in halves]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.monotonic() - started
            rss_end = server_rss(server)
            serving = server.is_serving()
            executed = [float(line.split("Prompt executed in ")[1].split()[0].rstrip("s"))
                        for line in server.log_text().splitlines() if "Prompt executed in " in line][args.warmup:]
        finally:
            server.stop()

    outcomes = [classify(server, result, size, bad) for result, _, size, bad in results]
    successes = outcomes.count("success")
    expected_failures = outcomes.count("expected failure")
    unexpected = [o for o in outcomes if o.startswith("unexpected")]
    latencies = [latency for _, latency, _, _ in results]
    print(f"prompts: {len(results)} from 2 clients at once (sizes {SIZES[0]}..{SIZES[-1]}, new seeds each, "
          f"new text every {TEXT_RUN}, every {args.bad_every}th wired wrongly)")
    print(f"successes: {successes}, expected failures (pack's message): {expected_failures}, unexpected: {len(unexpected)}")
    for outcome in unexpected[:10]:
        print("  ", outcome)
    print(f"wall time: {wall:.1f} s, {wall / len(results):.3f} s/prompt; median queue-to-end latency {statistics.median(latencies):.1f} s")
    if executed:
        print(f"host-reported execution time per prompt: median {statistics.median(executed):.2f} s, max {max(executed):.2f} s")
    growth = rss_end - rss_start
    print(f"server RSS after {args.warmup} warm-up prompts: {rss_start / 2**20:.1f} MiB; after the soak: {rss_end / 2**20:.1f} MiB; "
          f"growth {growth / 2**20:+.1f} MiB = {growth / len(results) / 1024:+.1f} KiB per prompt")
    print(f"server still serving at the end: {serving}")
    return 0 if not unexpected and serving else 1


if __name__ == "__main__":
    sys.exit(main())
