"""The main job: text-to-image with Stable Cascade through the real host (ComfyUI 0.3.75), to a PNG.

Run it with the environment's python (the README's first command):

    "$(bash scripts/setup_env.sh --print-python)" scripts/run_main_job.py [--models-dir DIR]

It starts the host with this pack installed in a fresh base directory (out/main_job/), queues the
bundled workflow example_workflows/api/text_to_image_api.json through POST /prompt exactly as the editor
would, waits for it, and writes the PNG (out/text_to_image.png by default).

Weights: with --models-dir (or SC_MODELS_DIR) pointing at a ComfyUI models folder that holds the
released files (diffusion_models/stage_c*.safetensors, stage_b*.safetensors, vae/stage_a.safetensors,
vae/previewer.safetensors, text_encoders/<CLIP-G>.safetensors) it uses them. Otherwise it writes tiny
seeded random stand-in models and says so: the whole path runs, and the picture is noise.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for the dev tooling, `devtools`
from devtools import host_server, standin_clip_g, standin_models  # noqa: E402
WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "text_to_image_api.json"

# role -> (models folder, workflow node, input name, released file names in order of preference)
ROLES = {
    "stage_c": ("diffusion_models", "1", "unet_name",
                ["stage_c_bf16.safetensors", "stage_c.safetensors", "stage_c_lite_bf16.safetensors", "stage_c_lite.safetensors"]),
    "stage_b": ("diffusion_models", "2", "unet_name",
                ["stage_b_bf16.safetensors", "stage_b.safetensors", "stage_b_lite_bf16.safetensors", "stage_b_lite.safetensors"]),
    "stage_a": ("vae", "3", "vae_name", ["stage_a.safetensors"]),
    "previewer": ("vae", "4", "previewer_name", ["previewer.safetensors"]),
    "clip_g": ("text_encoders", "5", "clip_name",
               ["stable_cascade_clip_g.safetensors", "clip_g.safetensors", "model.safetensors"]),
}


def find_real_weights(models_dir):
    """{role: path} when every role has a released file in models_dir, else (None, missing roles)."""
    found, missing = {}, []
    for role, (folder, _, _, names) in ROLES.items():
        path = next((models_dir / folder / n for n in names if (models_dir / folder / n).is_file()), None)
        if path is None:
            missing.append(f"{folder}/{names[0]}")
        else:
            found[role] = path
    return (found, []) if not missing else (None, missing)


def standin_weights():
    """Tiny seeded stand-ins (cached on this machine) for every role."""
    models = standin_models.write_standin_models(standin_clip_g.standins_dir() / "models",
                                                 roles=("stage_c", "stage_b", "stage_a", "previewer"))
    models["clip_g"] = Path(standin_clip_g.standin_clip_g_path())
    return models


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=os.environ.get("SC_MODELS_DIR"),
                        help="a ComfyUI models folder with the released weights (default: $SC_MODELS_DIR; none -> stand-ins)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "out" / "text_to_image.png", help="where to write the PNG")
    parser.add_argument("--base-dir", type=Path, default=REPO_ROOT / "out" / "main_job",
                        help="the host's base directory (models/, custom_nodes/, output/, host.log)")
    parser.add_argument("--prompt", default=None, help="the text prompt (default: the workflow's)")
    parser.add_argument("--seed", type=int, default=None, help="the seed of both samplers (default: the workflow's)")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds to wait for the host to answer")
    args = parser.parse_args(argv)

    weights, missing = (None, ["no --models-dir given"])
    if args.models_dir:
        weights, missing = find_real_weights(Path(args.models_dir))
    if weights is not None:
        print(f"[main job] using the real weights in {args.models_dir}", flush=True)
    else:
        print("[main job] NO REAL WEIGHTS: using tiny seeded random STAND-IN models "
              f"({'; '.join(missing)}). The whole path runs, but the picture is noise.", flush=True)
        weights = standin_weights()

    workflow = json.loads(WORKFLOW.read_text())
    server = host_server.HostServer(args.base_dir)
    for role, path in weights.items():
        folder, node, input_name, _ = ROLES[role]
        workflow[node]["inputs"][input_name] = server.add_model(folder, path)
    if args.prompt is not None:
        workflow["6"]["inputs"]["text"] = args.prompt
    if args.seed is not None:
        workflow["9"]["inputs"]["seed"] = workflow["10"]["inputs"]["seed"] = args.seed

    print(f"[main job] starting the host (log: {server.log_path})", flush=True)
    try:
        server.start(timeout=args.start_timeout)
        print(f"[main job] host ready on {server.url}; queueing {WORKFLOW.relative_to(REPO_ROOT)}", flush=True)
        started = time.monotonic()
        result = server.run_prompt(workflow, timeout=24 * 3600)
        if result.error is not None:
            raise host_server.HostError(f"the workflow failed in node {result.error.get('node_type')}: "
                                        f"{result.error.get('exception_message')}")
        if result.outcome != "success":
            raise host_server.HostError(f"the workflow ended with '{result.outcome}'")
        images = [image for output in result.outputs.values() for image in output.get("images", [])]
        if not images:
            raise host_server.HostError("the workflow finished without an image")
        entry = images[0]
        png = server.view(entry["filename"], entry.get("subfolder", ""), entry.get("type", "output"))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_bytes(png)
        print(f"[main job] done in {time.monotonic() - started:.1f} s ({len(result.progress)} progress updates, "
              f"{len(result.previews)} Previewer previews): wrote {args.output}", flush=True)
    except host_server.HostError as exc:
        print(f"[main job] FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
