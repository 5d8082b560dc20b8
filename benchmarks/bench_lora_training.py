"""Peak GPU memory and seconds per update of Stage C LoRA training (rank 4, attention layers).

    PY=~/.cache/stable-cascade-comfyui/venv/bin/python
    $PY benchmarks/bench_lora_training.py                      # GPU: 3.6B and 1B, 1024², batch 1, ckpt on/off
    $PY benchmarks/bench_lora_training.py --token              # + a new token through the host's CLIP-G
    $PY benchmarks/bench_lora_training.py --memory-fraction 0.14   # emulate a smaller card (0.14 x 80 GB = 11 GB)
    $PY benchmarks/bench_lora_training.py --tiny               # CPU smoke run: a tiny Stage C at 64², fp32

What runs is the pack's own training loop (lora.training.train) on our StageC with seeded random
bf16 weights of the released shapes, built directly on the device (no file, no host model
management): the base frozen, LoRA on every attention projection, per-block gradient checkpointing,
bf16 autocast (fp16 + scaler where the GPU lacks bf16). Text embeddings are precomputed (random,
the CLIP-G shapes) unless --token, which encodes the captions with the host's CLIP-G (the seeded
stand-in file, devtools/standin_clip_g.py) through the node's own CaptionEncoder, with gradients
into one new token. Latents are random 16-channel tensors of resolution/32 (what the EfficientNet
encoder gives); the encoder itself is not on the GPU while training.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # for the dev tooling, `devtools`
from devtools.pack_env import HOST_DIR, register_pack  # noqa: E402

GiB = 1024**3
TINY = dict(c_hidden=[64, 64], nhead=[2, 2], blocks=[[1, 2], [2, 1]], c_cond=64, c_r=64)


def import_pack(use_gpu):
    if str(HOST_DIR) not in sys.path:
        sys.path.insert(0, str(HOST_DIR))
    from comfy.cli_args import args
    args.cpu = not use_gpu  # before the first import of comfy.model_management
    register_pack()
    import stable_cascade_pack
    return stable_cascade_pack


def seeded_network(pack, variant, device, dtype, seed=0):
    from stable_cascade_pack.stages.variants import RELEASED_CONFIGS
    from stable_cascade_pack.stages.stage_c import StageC
    config = dict(RELEASED_CONFIGS["stage_c_big" if variant == "3.6B" else "stage_c_lite"][1])
    if variant == "tiny":
        config.update(TINY)
    network = StageC(**config, device="meta")
    network = network.to_empty(device=device).to(dtype)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for tensor in network.state_dict().values():  # one tensor at a time, made on the device
            tensor.copy_((torch.randn(tensor.shape, generator=generator) * 0.02).to(device, dtype))
    return network.eval().requires_grad_(False)


def text_encoder(args, device):
    """encode(captions, token_vectors) and the initial token vectors; precomputed unless --token."""
    if not args.token:
        generator = torch.Generator().manual_seed(1)
        text = torch.randn(1, 77, 1280, generator=generator)
        pooled = torch.randn(1, 1, 1280, generator=generator)
        return (lambda captions, vectors: {"clip_text": text.expand(len(captions), -1, -1),
                                           "clip_text_pooled": pooled.expand(len(captions), -1, -1)}), None
    import comfy.sd
    from devtools.standin_clip_g import standin_clip_g_path
    from stable_cascade_pack.lora.token_spec import parse_new_tokens
    from stable_cascade_pack.nodes.autograd_ready import make_autograd_ready
    from stable_cascade_pack.nodes.training_text import CaptionEncoder, initial_vectors
    clip = comfy.sd.load_clip(ckpt_paths=[str(standin_clip_g_path())], clip_type=comfy.sd.CLIPType.STABLE_CASCADE)
    tokens = parse_new_tokens("[sks] ^dog</w>")
    make_autograd_ready(clip.cond_stage_model)
    return CaptionEncoder(clip, tokens), initial_vectors(clip, tokens)


def measure(pack, args, variant, checkpointing, device):
    from stable_cascade_pack.lora.layers import LoRASet
    from stable_cascade_pack.lora.training import NewTokens, Settings, frozen, train
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    network = seeded_network(pack, variant, device, dtype)
    weights = sum(t.numel() * t.element_size() for t in network.state_dict().values())
    encode, token_init = text_encoder(args, device)
    tokens = NewTokens({"sks": token_init["sks"]}) if token_init else None
    lora = LoRASet(network, rank=4, layers="attention")
    latent = args.resolution // 32
    latents = torch.randn(4, 16, latent, latent, generator=torch.Generator().manual_seed(2))
    captions = ["a photo of [sks]" if tokens is not None else "a photo"] * 4
    times = []
    last = [time.perf_counter()]

    def on_update(step, loss):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    settings = Settings(steps=args.steps, batch_size=args.batch, seed=0, caption_dropout=0.0,
                        precision="fp32" if device.type == "cpu" else "auto", gradient_checkpointing=checkpointing)
    with frozen(getattr(getattr(encode, "clip", None), "cond_stage_model", None)):
        train(network, lora, latents, captions, encode, settings, tokens=tokens, on_update=on_update, device=device)
    peak = torch.cuda.max_memory_allocated() / GiB if device.type == "cuda" else float("nan")
    per_step = statistics.median(times[1:] or times)
    del network, lora
    return weights / GiB, peak, per_step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["3.6B", "1B"], choices=["3.6B", "1B", "tiny"])
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6, help="updates per measurement (the first is warm-up)")
    parser.add_argument("--token", action="store_true", help="also train a new token through the host's CLIP-G")
    parser.add_argument("--memory-fraction", type=float, default=None,
                        help="torch.cuda.set_per_process_memory_fraction, to emulate a smaller card")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny Stage C, 64², 3 updates")
    args = parser.parse_args(argv)
    if args.tiny:
        args.variants, args.resolution, args.steps = ["tiny"], 64, 3
    use_gpu = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if use_gpu else "cpu")
    pack = import_pack(use_gpu)
    if use_gpu and args.memory_fraction:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction)
    where = torch.cuda.get_device_name() if use_gpu else "CPU (no GPU: memory figures are not measured)"
    print(f"device: {where}; resolution {args.resolution}², batch {args.batch}, rank 4 attention, "
          f"{'with' if args.token else 'without'} a new token, torch {torch.__version__}")
    print(f"{'model':>6} {'ckpt':>5} {'weights GiB':>12} {'peak GiB':>9} {'s/update':>9}")
    for variant in args.variants:
        for checkpointing in (True, False):
            try:
                weights, peak, per_step = measure(pack, args, variant, checkpointing, device)
                print(f"{variant:>6} {str(checkpointing):>5} {weights:12.2f} {peak:9.2f} {per_step:9.3f}", flush=True)
            except torch.cuda.OutOfMemoryError:
                print(f"{variant:>6} {str(checkpointing):>5} {'':>12} {'OOM':>9}", flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
