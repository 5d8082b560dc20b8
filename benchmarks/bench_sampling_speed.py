"""Seconds per sampling step: our GDF samplers beside the host's native KSampler path.

    python benchmarks/bench_sampling_speed.py           # Stage C lite 1024x1024, Stage B lite 512x512
    python benchmarks/bench_sampling_speed.py --quick   # full-size models, tiny latents, 1 run (~1.5 minutes)
    python benchmarks/bench_sampling_speed.py --stages c --steps 3 --runs 5 --threads 1

Same process, same weights: a seeded random full-size lite network (fp32, pack layout) is built
in memory once per stage; "ours" is that state dict behind the host MODEL our loader makes
(nodes.host_models.build_diffusion_model, our network), sampled by our node
(SCPack_StageCSampler / SCPack_StageBSampler: GDF ddpm, cfg on); "native" is the same weights
converted to the original layout and loaded by the host itself (comfy.sd.
load_diffusion_model_state_dict, the host's network), sampled by comfy.sample.sample with
euler_ancestral + simple, cfg on. Both run the conditional and unconditional halves as one
doubled batch, so one step is one network call on batch 2.

Per-step seconds = wall time of the whole sampler call / steps (setup included), median over
`--runs` runs after one warm-up call each (the minimum is printed too: on a shared machine it is
the least disturbed run); ours and native alternate so that load from other processes on the
machine hits both alike. On a busy 2-core machine `--threads 1` gives steadier figures.
`--forward` also times one bare network call of each network on identical inputs (no sampler),
which separates network speed from sampler overhead.
"""
import argparse
import gc
import os
import time

import _common  # beside this file: python puts the script's folder on sys.path
from _common import median

# (variant, image size) per stage; latent sizes follow: Stage C = image / 42.67 (1024 -> 24),
# Stage B = image / 4.
FULL = {"c": dict(image=1024, latent=(1, 16, 24, 24)), "b": dict(image=512, latent=(1, 4, 128, 128), prior=(1, 16, 12, 12))}
QUICK = {"c": dict(image=256, latent=(1, 16, 6, 6)), "b": dict(image=128, latent=(1, 4, 32, 32), prior=(1, 16, 3, 3))}
VARIANTS = {"c": "stage_c_lite", "b": "stage_b_lite"}
SEED = 0


def build_models(stage):
    """(ours, native): host MODELs with the same seeded weights; ours shares the state dict's tensors."""
    import comfy.sd
    from stable_cascade_pack.nodes import host_models
    from stable_cascade_pack.stages.checkpoint.layouts import convert_state_dict
    from stable_cascade_pack.stages.variants import RELEASED_CONFIGS

    variant = VARIANTS[stage]
    state_dict = _common.seeded_state_dict(variant, seed=SEED)
    ours = host_models.build_diffusion_model(stage, state_dict, RELEASED_CONFIGS[variant][1])
    original = dict(convert_state_dict(state_dict, "pack", "original"))  # q/k/v joined: the only copies made here
    native = comfy.sd.load_diffusion_model_state_dict(original)
    del original
    gc.collect()
    if native is None:
        raise SystemExit(f"the host did not recognise the {variant} state dict")
    return ours, native


def conditioning(stage, shape, prior_shape):
    """CONDITIONING pairs as the host's CLIPTextEncode (stable_cascade CLIP) gives them: seeded."""
    import torch

    generator = torch.Generator().manual_seed(1234)
    tokens = [torch.randn(1, 77, 1280, generator=generator) for _ in range(2)]
    pooled = [torch.randn(1, 1280, generator=generator) for _ in range(2)]
    positive = [[tokens[0], {"pooled_output": pooled[0]}]]
    negative = [[tokens[1], {"pooled_output": pooled[1]}]]
    prior = torch.randn(prior_shape, generator=generator) if stage == "b" else None
    return positive, negative, prior


def run_ours(stage, model, positive, negative, latent, prior, steps):
    from stable_cascade_pack.nodes.sampling import StageBSampler, StageCSampler

    common = dict(seed=SEED, steps=steps, sampler="ddpm", eta=0.0, cfg_rho=0.7, denoise=1.0)
    if stage == "c":
        return StageCSampler.execute(model, positive, negative, {"samples": latent}, cfg=4.0, shift=2.0, **common).result[0]
    return StageBSampler.execute(model, positive, negative, {"samples": prior}, {"samples": latent}, cfg=1.1, shift=1.0,
                                 **common).result[0]


def run_native(stage, model, positive, negative, latent, prior, steps):
    import torch

    import comfy.sample

    if stage == "b":  # what StableCascade_StageB_Conditioning does; the negative gets zeros, as in ours
        positive = [[positive[0][0], {**positive[0][1], "stable_cascade_prior": prior}]]
        negative = [[negative[0][0], {**negative[0][1], "stable_cascade_prior": torch.zeros_like(prior)}]]
    noise = comfy.sample.prepare_noise(latent, SEED)
    cfg = 4.0 if stage == "c" else 1.1
    return comfy.sample.sample(model, noise, steps, cfg, "euler_ancestral", "simple", positive, negative, latent,
                               denoise=1.0, disable_pbar=True, seed=SEED)


def time_call(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def forward_inputs(stage, latent, prior, positive, negative):
    """The doubled-batch inputs of one guided step, for a bare network call."""
    import torch

    x = torch.cat([latent, latent]) + 0.5
    r = torch.full((2,), 0.5)
    pooled = torch.cat([positive[0][1]["pooled_output"], negative[0][1]["pooled_output"]]).unsqueeze(1)
    if stage == "c":
        return dict(x=x, r=r, clip_text=torch.cat([positive[0][0], negative[0][0]]), clip_text_pooled=pooled,
                    clip_img=torch.zeros(2, 1, 768))
    return dict(x=x, r=r, effnet=torch.cat([prior, torch.zeros_like(prior)]), clip=pooled)


def bench_stage(stage, sizes, steps, runs, forward):
    import torch

    import comfy.model_management as mm

    settings = sizes[stage]
    print(f"\nStage {stage.upper()} lite, {settings['image']}x{settings['image']}: latent {list(settings['latent'])}, batch 1, "
          f"cfg on (network batch 2), {steps} step(s) per call, {runs} timed call(s) after 1 warm-up", flush=True)
    started = time.perf_counter()
    ours, native = build_models(stage)
    print(f"  built both models (fp32, seeded) in {time.perf_counter() - started:.0f} s; "
          f"ours {type(ours.model.diffusion_model).__module__}.{type(ours.model.diffusion_model).__name__}, "
          f"native {type(native.model.diffusion_model).__module__}.{type(native.model.diffusion_model).__name__}", flush=True)
    latent = torch.zeros(settings["latent"])
    positive, negative, prior = conditioning(stage, settings["latent"], settings.get("prior"))

    callers = {
        "ours": lambda n: run_ours(stage, ours, positive, negative, latent, prior, n),
        "native": lambda n: run_native(stage, native, positive, negative, latent, prior, n),
    }
    per_step = {name: [] for name in callers}
    with torch.inference_mode():
        for name, call in callers.items():
            seconds, result = time_call(lambda: call(1))
            finite = bool(torch.isfinite(result["samples"] if isinstance(result, dict) else result).all())
            print(f"  warm-up {name:<6}: {seconds:.2f} s for 1 step (output finite: {finite})", flush=True)
        for run in range(runs):
            for name in (("ours", "native") if run % 2 == 0 else ("native", "ours")):
                seconds, _ = time_call(lambda: callers[name](steps))
                per_step[name].append(seconds / steps)
                print(f"  run {run + 1} {name:<6}: {seconds / steps:.2f} s/step", flush=True)

        forward_times = {}
        if forward:
            inputs = forward_inputs(stage, latent, prior, positive, negative)
            networks = {"ours": ours.model.diffusion_model, "native": native.model.diffusion_model}
            mm.load_models_gpu([ours, native])
            for name, network in networks.items():
                network(**inputs)  # warm-up
            for run in range(runs):
                for name in (("ours", "native") if run % 2 == 0 else ("native", "ours")):
                    seconds, _ = time_call(lambda: networks[name](**inputs))
                    forward_times.setdefault(name, []).append(seconds)

    ours_step, native_step = median(per_step["ours"]), median(per_step["native"])
    print(f"  => seconds per step (median): ours {ours_step:.2f}, native {native_step:.2f}, "
          f"ratio ours/native {ours_step / native_step:.2f}; (minimum: ours {min(per_step['ours']):.2f}, "
          f"native {min(per_step['native']):.2f}, ratio {min(per_step['ours']) / min(per_step['native']):.2f})")
    if forward_times:
        ours_fwd, native_fwd = median(forward_times["ours"]), median(forward_times["native"])
        print(f"  => one bare network call, batch 2 (median): ours {ours_fwd:.2f} s, native {native_fwd:.2f} s, "
              f"ratio ours/native {ours_fwd / native_fwd:.2f}; (minimum: ratio "
              f"{min(forward_times['ours']) / min(forward_times['native']):.2f})")
    del ours, native, callers
    gc.collect()
    mm.soft_empty_cache()
    return ours_step, native_step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny latents (C 256x256, B 128x128), 1 step, 1 run")
    parser.add_argument("--stages", default="cb", help="which stages: 'c', 'b' or 'cb' (default)")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed call (default 1)")
    parser.add_argument("--runs", type=int, help="timed calls per side (default 3; --quick 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--forward", action="store_true", help="also time one bare network call of each network")
    options = parser.parse_args()
    steps = options.steps
    runs = options.runs or (1 if options.quick else 3)
    sizes = QUICK if options.quick else FULL

    _common.import_host()
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    print(f"machine: {_common.machine_line()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (the machine is shared: other processes may run)")
    print("ours: SCPack_Stage*Sampler (GDF ddpm) on our network; native: comfy.sample.sample euler_ancestral/simple "
          "on the host's network; fp32 weights, CPU")
    started = time.perf_counter()
    results = {stage: bench_stage(stage, sizes, steps, runs, options.forward) for stage in options.stages}
    print("\nsummary (seconds per step, median):")
    for stage, (ours_step, native_step) in results.items():
        image = sizes[stage]["image"]
        print(f"  Stage {stage.upper()} lite {image}x{image}: ours {ours_step:.2f}  native {native_step:.2f}  "
              f"ours/native {ours_step / native_step:.2f}")
    print(f"total {time.perf_counter() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
