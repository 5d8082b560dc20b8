"""Headless Stage C LoRA training: one command queues the training workflow on the real host.

    "$(bash scripts/setup_env.sh --print-python)" scripts/run_training_job.py \
        --dataset DIR [--models-dir DIR] [--lora-name NAME] [--steps N] [--new-token "[fernando] ^dog</w>"] ...

It starts the host (ComfyUI 0.3.75) with this pack in a fresh base directory (out/training_job/),
queues example_workflows/api/train_stage_c_lora_api.json through POST /prompt as the editor would,
prints the step and loss as the trainer reports them, and at the end copies the LoRA (and any learned
token embeddings) and the loss graph to --output-dir. Ctrl-C interrupts training: the host keeps
the last saved LoRA, and --resume continues it.

Weights: with --models-dir (or SC_MODELS_DIR) holding diffusion_models/stage_c*.safetensors,
vae/effnet_encoder.safetensors, vae/previewer.safetensors and text_encoders/<CLIP-G> it trains on
them. Without, it uses tiny seeded random stand-ins and says so (the whole path runs; the LoRA is
meaningless). Without --dataset it writes a tiny dataset of random pictures, for a dry run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "train_stage_c_lora_api.json"
TRAIN, LOSS_GRAPH = "20", "21"
TEXT_FRAME = 3

sys.path.insert(0, str(REPO_ROOT))  # for the dev tooling, `devtools`
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from devtools import host_server, standin_clip_g, standin_models  # noqa: E402
from run_main_job import ROLES as SAMPLING_ROLES  # noqa: E402

# role -> (models folder, workflow node, input name, released file names in order of preference)
ROLES = {
    "stage_c": SAMPLING_ROLES["stage_c"][:1] + ("1",) + SAMPLING_ROLES["stage_c"][2:],
    "effnet": ("vae", "4", "encoder_name", ["effnet_encoder.safetensors"]),
    "previewer": ("vae", "4", "previewer_name", ["previewer.safetensors"]),
    "clip_g": SAMPLING_ROLES["clip_g"],
}


def find_weights(models_dir):
    found, missing = {}, []
    for role, (folder, _, _, names) in ROLES.items():
        path = next((models_dir / folder / n for n in names if (models_dir / folder / n).is_file()), None)
        (missing.append(f"{folder}/{names[0]}") if path is None else found.__setitem__(role, path))
    return (found, []) if not missing else (None, missing)


def standin_weights():
    models = standin_models.write_standin_models(standin_clip_g.standins_dir() / "models",
                                                 roles=("stage_c", "effnet", "previewer"))
    models["clip_g"] = Path(standin_clip_g.standin_clip_g_path())
    return models


def write_dry_run_dataset(folder):
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, caption in enumerate(["a photo of [sks]", "[sks] on a table", "a red ball"]):
        Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8)).save(folder / f"image_{i}.png")
        (folder / f"image_{i}.txt").write_text(caption)
    return folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, help="folder of images with <name>.txt captions (default: a dry-run set)")
    parser.add_argument("--models-dir", type=Path, default=os.environ.get("SC_MODELS_DIR"))
    parser.add_argument("--base-dir", type=Path, default=REPO_ROOT / "out" / "training_job")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "out" / "lora")
    parser.add_argument("--lora-name", default="stage_c_lora")
    parser.add_argument("--resume", action="store_true", help="continue the saved LoRA of this name")
    parser.add_argument("--new-token", action="append", default=[], help="'[token] init-pattern' (repeatable)")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    for name, default in (("steps", None), ("rank", None), ("learning-rate", None), ("batch-size", None),
                          ("gradient-accumulation", None), ("seed", None), ("resolution", None), ("save-every", None),
                          ("preview-every", None), ("precision", None), ("layers", None)):
        parser.add_argument(f"--{name}", default=default, help="the node input of that name (default: the workflow's)")
    args = parser.parse_args(argv)

    weights, missing = (None, ["no --models-dir given"])
    if args.models_dir:
        weights, missing = find_weights(Path(args.models_dir))
    if weights is None:
        print(f"[training job] NO REAL WEIGHTS ({'; '.join(missing)}): training tiny seeded random STAND-IN models. "
              "The whole path runs, but the LoRA is meaningless.", flush=True)
        weights = standin_weights()
    server = host_server.HostServer(args.base_dir)
    dataset = args.dataset or write_dry_run_dataset(args.base_dir / "dry_run_dataset")

    workflow = json.loads(WORKFLOW.read_text())
    for role, path in weights.items():
        folder, node, input_name, _ = ROLES[role]
        workflow[node]["inputs"][input_name] = server.add_model(folder, path)
    inputs = workflow[TRAIN]["inputs"]
    inputs.update(dataset_folder=str(Path(dataset).resolve()), lora_name=args.lora_name, resume=args.resume,
                  new_tokens="\n".join(args.new_token) or ("[sks] ^dog</w>" if args.dataset is None else ""))
    if args.dataset is None:
        inputs.update(steps=4, resolution=64, save_every=2, preview_every=2)
    for name in ("steps", "rank", "learning_rate", "batch_size", "gradient_accumulation", "seed", "resolution",
                 "save_every", "preview_every", "precision", "layers"):
        value = getattr(args, name)
        if value is not None:
            inputs[name] = type(inputs[name])(value) if not isinstance(inputs[name], str) else value

    print(f"[training job] starting the host (log: {server.log_path})", flush=True)
    try:
        server.start(timeout=args.start_timeout)
        with server.client() as client:
            prompt_id = client.queue(workflow)
            print(f"[training job] queued {WORKFLOW.relative_to(REPO_ROOT)} on {server.url}", flush=True)
            result = _follow(client, prompt_id)
        if result.error is not None:
            raise host_server.HostError(f"training failed: {result.error.get('exception_message')}")
        if result.outcome != "success":
            raise host_server.HostError(f"training ended with '{result.outcome}' (the last saved LoRA is in "
                                        f"{server.models_dir('loras')})")
        args.output_dir.mkdir(parents=True, exist_ok=True)
        lora = server.models_dir("loras") / f"{args.lora_name}.safetensors"
        shutil.copy2(lora, args.output_dir / lora.name)
        for line in inputs["new_tokens"].splitlines():
            name = line.split()[0].strip("[]<>") if line.strip() else None
            if name:
                shutil.copy2(server.models_dir("embeddings") / f"{name}.safetensors", args.output_dir / f"{name}.safetensors")
        graph = result.outputs[LOSS_GRAPH]["images"][0]
        (args.output_dir / "loss_graph.png").write_bytes(server.view(graph["filename"], graph.get("subfolder", ""), "output"))
        print(f"[training job] done: {args.output_dir / lora.name} (+ loss_graph.png, token embeddings) ", flush=True)
    except host_server.PromptRejected as exc:
        print(f"[training job] REFUSED: {json.dumps(exc.node_errors, indent=1)}", file=sys.stderr)
        return 1
    except host_server.HostError as exc:
        print(f"[training job] FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        server.interrupt()
        print("[training job] interrupted: the last saved LoRA is kept; --resume continues it", file=sys.stderr)
        return 130
    finally:
        server.stop()
    return 0


def _follow(client, prompt_id):
    """Print the trainer's progress text (step, loss) while waiting for the prompt to end."""
    def report(message):
        if message.type == "binary" and message.data["event"] == TEXT_FRAME:
            payload = message.data["payload"]
            length = int.from_bytes(payload[:4], "big")
            print(f"[training job] {payload[4 + length:].decode('utf-8', 'replace')}", flush=True)
        return (message.type == "executing" and isinstance(message.data, dict)
                and message.data.get("node") is None and message.data.get("prompt_id") == prompt_id)

    client.wait_for(report, timeout=7 * 24 * 3600)
    return client.wait_done(prompt_id, timeout=60)


if __name__ == "__main__":
    sys.exit(main())
