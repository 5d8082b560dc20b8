"""GPU speed table of issue 16: ours eager, ours fast (SCPack_FastPath), the host's native KSampler.

    python benchmarks/bench_gpu.py                 # on a CUDA GPU: released sizes, bf16 (a few minutes)
    python benchmarks/bench_gpu.py --tiny          # tiny configs on the CPU: a smoke run of every row
    python benchmarks/bench_gpu.py --rows c1,b --fast-mode compile --steps 5 --runs 3

Rows (batch = images; cfg on, so each step is one network call on the doubled batch):
  c1   Stage C 3.6B, 1024x1024 (latent 24x24), batch 1        ms per step
  c4   Stage C 3.6B, batch 4                                   ms per step
  b    Stage B 1.5B, 1024x1024 (latent 256x256), batch 1       ms per step
  e2e  text-to-image 1024x1024: 20 Stage C + 10 Stage B steps + Stage A decode (text encoding excluded:
       the conditioning is seeded random, as CLIP-G's output would be)
Columns per row: ours eager (SCPack_Stage*Sampler on our network), ours fast (the same through
SCPack_FastPath's apply_fast_path), native (comfy.sample.sample, i.e. KSampler, euler_ancestral/simple,
on the host's own network loaded by comfy.sd.load_diffusion_model_state_dict). Per row: median
wall time per step (whole sampler call / steps, synchronised), the call's peak GPU memory above the
weights already resident (the weights are the same size on both sides), and achieved TFLOP/s (FLOPs of one network call counted by torch's FlopCounterMode / time per step).
"fast" also prints its first-call time (the compile): run the script twice to see the warm-cache start.

Weights are seeded random tensors of the released shapes (generated on the device, stored bf16 on a
GPU), the same for ours and native. `--tiny` uses the tiny stand-in configs (devtools.standin_models)
in fp32 on the CPU, where "cuda graphs" falls back to plain compile; `--backend aot_eager` there
avoids inductor's slow CPU compile.
"""
import argparse
import gc
import statistics
import sys
import time

import _common  # beside this file: python puts the script's folder on sys.path

SEED = 0
ROWS = ("c1", "c4", "b", "e2e")
# Steps of the end-to-end row: the official text-to-image settings (--tiny: 2 + 2, a smoke run).
E2E_STEPS = {"c": 20, "b": 10}
E2E_STEPS_TINY = {"c": 2, "b": 2}


def sizes(tiny):
    """Latent shapes per row (batch 1): Stage C latent = image / 42.67, Stage B latent = image / 4."""
    if tiny:
        return {"c": (16, 4, 4), "b": (4, 16, 16), "prior": (16, 4, 4)}
    return {"c": (16, 24, 24), "b": (4, 256, 256), "prior": (16, 24, 24)}


# --- models ---------------------------------------------------------------------------------------

def network_configs(tiny):
    from devtools.standin_models import TINY_CONFIGS
    from stable_cascade_pack.stages.variants import RELEASED_CONFIGS

    if tiny:
        return {"c": TINY_CONFIGS["stage_c"][1], "b": TINY_CONFIGS["stage_b"][1]}
    return {"c": RELEASED_CONFIGS["stage_c_big"][1], "b": RELEASED_CONFIGS["stage_b_big"][1]}


def seeded_weights(network, device, dtype=None):
    """{key: tensor} for a network built on the meta device: seeded per key, drawn on `device` (fast
    on a GPU), stored on the CPU in `dtype` (floating tensors; None keeps fp32)."""
    import zlib

    import torch

    weights = {}
    for key, meta in network.state_dict().items():
        if not meta.is_floating_point():
            weights[key] = torch.zeros(meta.shape, dtype=meta.dtype)
            continue
        generator = torch.Generator(device=device).manual_seed(SEED * 1_000_003 + zlib.crc32(key.encode()))
        if key.endswith("running_var"):
            tensor = torch.rand(meta.shape, generator=generator, device=device) * 0.5 + 0.75
        else:
            fan_in = meta[0].numel() if meta.dim() > 1 else 1
            std = fan_in ** -0.5 if meta.dim() > 1 else 0.02
            tensor = torch.randn(meta.shape, generator=generator, device=device) * std
        weights[key] = tensor.to(dtype or torch.float32).cpu()
    return weights


def stage_network(stage, config):
    from stable_cascade_pack.stages.variants import model_class

    return model_class("StageC" if stage == "c" else "StageB")(**config, device="meta")


def build_models(stage, config, weights, tiny, dtype):
    """(ours, native): host MODELs on the same weights; ours is our network, native the host's."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    from stable_cascade_pack.nodes import host_models
    from stable_cascade_pack.stages.checkpoint.layouts import convert_state_dict

    ours = host_models.build_diffusion_model(stage, weights, config, weight_dtype=dtype)
    if not tiny:  # the host's own loading path, from the released (original) layout
        native = comfy.sd.load_diffusion_model_state_dict(dict(convert_state_dict(weights, "pack", "original")))
        if native is None:
            raise SystemExit(f"the host did not recognise the Stage {stage.upper()} state dict")
        return ours, native
    # The host's detection knows only the released widths: build its config for the tiny one by hand.
    host_config = {"c": comfy.supported_models.Stable_Cascade_C, "b": comfy.supported_models.Stable_Cascade_B}[stage]
    model_config = host_config({**config, "stable_cascade_stage": stage})
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model(weights)
    model.load_model_weights(weights, "")
    return ours, comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                  offload_device=mm.unet_offload_device())


def stage_a_vaes(device):
    """(ours, native) host VAEs around the released-size Stage A (20M parameters), same weights."""
    import comfy.sd
    from stable_cascade_pack.nodes import host_models
    from stable_cascade_pack.stages.variants import RELEASED_CONFIGS, build_released

    weights = seeded_weights(build_released("stage_a", device="meta"), device)
    return host_models.build_stage_a_vae(weights, RELEASED_CONFIGS["stage_a"][1]), comfy.sd.VAE(sd=weights)


# --- sampling calls ---------------------------------------------------------------------------------

def conditioning(batch):
    """CONDITIONING pairs as the host's CLIPTextEncode (stable_cascade CLIP) gives them, seeded."""
    import torch

    generator = torch.Generator().manual_seed(1234)
    pairs = []
    for _ in range(2):
        tokens = torch.randn(batch, 77, 1280, generator=generator)
        pooled = torch.randn(batch, 1280, generator=generator)
        pairs.append([[tokens, {"pooled_output": pooled}]])
    return pairs[0], pairs[1]


def run_ours(stage, model, latent, prior, steps):
    from stable_cascade_pack.nodes.sampling import StageBSampler, StageCSampler

    positive, negative = conditioning(latent.shape[0])
    common = dict(seed=SEED, steps=steps, sampler="ddpm", eta=0.0, cfg_rho=0.7, denoise=1.0)
    if stage == "c":
        return StageCSampler.execute(model, positive, negative, {"samples": latent}, cfg=4.0, shift=2.0,
                                     **common).result[0]["samples"]
    return StageBSampler.execute(model, positive, negative, {"samples": prior}, {"samples": latent}, cfg=1.1,
                                 shift=1.0, **common).result[0]["samples"]


def run_native(stage, model, latent, prior, steps):
    import torch

    import comfy.sample

    positive, negative = conditioning(latent.shape[0])
    if stage == "b":  # what StableCascade_StageB_Conditioning does; the negative gets zeros, as in ours
        positive = [[positive[0][0], {**positive[0][1], "stable_cascade_prior": prior}]]
        negative = [[negative[0][0], {**negative[0][1], "stable_cascade_prior": torch.zeros_like(prior)}]]
    noise = comfy.sample.prepare_noise(latent, SEED)
    cfg = 4.0 if stage == "c" else 1.1
    return comfy.sample.sample(model, noise, steps, cfg, "euler_ancestral", "simple", positive, negative, latent,
                               denoise=1.0, disable_pbar=True, seed=SEED)


def synchronize():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function):
    """(seconds, peak GPU bytes above what was resident before, or None; result) of one synchronised
    call. Both columns' weights stay resident side by side (same size), so the peak is counted above
    them: it is what the call itself needs (activations, workspaces, CUDA graph pools)."""
    import torch

    cuda = torch.cuda.is_available()
    synchronize()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
    started = time.perf_counter()
    result = function()
    synchronize()
    seconds = time.perf_counter() - started
    return seconds, (torch.cuda.max_memory_allocated() - resident if cuda else None), result


def network_flops(model, stage, latent, prior):
    """FLOPs of one guided network call (doubled batch) on our network, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import comfy.model_management as mm

    mm.load_models_gpu([model])
    network = model.model.diffusion_model
    device, dtype = model.load_device, model.model.manual_cast_dtype or model.model.get_dtype()
    batch = 2 * latent.shape[0]
    x = torch.zeros((batch, *latent.shape[1:]), device=device, dtype=dtype)
    r = torch.full((batch,), 0.5, device=device)
    if stage == "c":
        inputs = dict(clip_text=torch.zeros(batch, 77, 1280), clip_text_pooled=torch.zeros(batch, 1, 1280),
                      clip_img=torch.zeros(batch, 1, 768))
    else:
        inputs = dict(effnet=torch.zeros((batch, *prior.shape[1:])), clip=torch.zeros(batch, 1, 1280))
    inputs = {name: value.to(device=device, dtype=dtype) for name, value in inputs.items()}
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(x, r, **inputs)
    return counter.get_total_flops()


def measure(name, call, steps, runs):
    """One warm-up call (its time printed: for "fast" it is the compile), then `runs` timed calls."""
    first, _, result = timed(lambda: call(steps))
    per_step, peaks = [], []
    for _ in range(runs):
        seconds, peak, result = timed(lambda: call(steps))
        per_step.append(seconds / steps)
        peaks.append(peak)
    finite = bool(result.isfinite().all()) if hasattr(result, "isfinite") else True
    print(f"    {name:<10} first call {first:7.2f} s   median {1000 * statistics.median(per_step):9.2f} ms/step   "
          f"min {1000 * min(per_step):9.2f}   finite {finite}", flush=True)
    return {"ms": 1000 * statistics.median(per_step), "first_s": first,
            "peak": max(peaks) if peaks[0] is not None else None, "result": result}


# --- rows -------------------------------------------------------------------------------------------

def bench_stage_rows(stage, rows, models, fast, shape, prior_shape, options):
    import torch

    results = {}
    for row in rows:
        batch = 4 if row == "c4" else 1
        latent = torch.zeros((batch, *shape))
        prior = torch.randn((batch, *prior_shape), generator=torch.Generator().manual_seed(5)) if stage == "b" else None
        print(f"  row {row}: latent {[batch, *shape]}, {options.steps} steps per call, {options.runs} timed calls",
              flush=True)
        flops = network_flops(models["ours"], stage, latent, prior)
        calls = {
            "ours eager": lambda n: run_ours(stage, models["ours"], latent, prior, n),
            "ours fast": lambda n: run_ours(stage, fast, latent, prior, n),
            "native": lambda n: run_native(stage, models["native"], latent, prior, n),
        }
        with torch.inference_mode():
            measured = {name: measure(name, call, options.steps, options.runs) for name, call in calls.items()}
        eager, compiled = measured["ours eager"]["result"].float(), measured["ours fast"]["result"].float()
        difference = ((compiled - eager).abs().max() / eager.abs().max().clamp_min(1e-12)).item()
        print(f"    fast vs eager, final latent: max |difference| / max |eager| = {difference:.2e}", flush=True)
        for entry in measured.values():
            entry["tflops"] = flops / (entry["ms"] / 1000) / 1e12
            entry.pop("result")
        results[row] = dict(measured, flops=flops, fast_vs_eager=difference)
    return results


def bench_end_to_end(all_models, fast_models, vaes, sizes_, options):
    """20 Stage C + 10 Stage B steps + Stage A decode, batch 1, for each column."""
    import torch

    latent_c, latent_b = torch.zeros((1, *sizes_["c"])), torch.zeros((1, *sizes_["b"]))
    steps = E2E_STEPS_TINY if options.tiny else E2E_STEPS

    def pipeline(run, models, vae):
        def call(_steps):
            prior = run("c", models["c"], latent_c, None, steps["c"])
            stage_b = run("b", models["b"], latent_b, prior, steps["b"])
            return vae.decode(stage_b)
        return call

    columns = {
        "ours eager": pipeline(run_ours, {s: all_models[s]["ours"] for s in "cb"}, vaes[0]),
        "ours fast": pipeline(run_ours, fast_models, vaes[0]),
        "native": pipeline(run_native, {s: all_models[s]["native"] for s in "cb"}, vaes[1]),
    }
    print(f"  row e2e: {steps['c']} Stage C + {steps['b']} Stage B steps + Stage A decode, batch 1", flush=True)
    measured = {}
    with torch.inference_mode():
        for name, call in columns.items():
            entry = measure(name, call, 1, options.runs)  # "per step" of 1 = the whole pipeline
            entry.pop("result")
            measured[name] = entry
    return {"e2e": measured}


def print_table(results, device_name, options):
    columns = ("ours eager", "ours fast", "native")
    titles = {"c1": "Stage C, batch 1, ms/step", "c4": "Stage C, batch 4, ms/step", "b": "Stage B, batch 1, ms/step",
              "e2e": "text-to-image (20 C + 10 B + A decode), ms"}
    print(f"\n## {device_name}, {time.strftime('%Y-%m-%d')}, fast mode '{options.fast_mode}', backend {options.backend}")
    print("\n| | " + " | ".join(columns) + " | fast/native | fast first call (s) |")
    print("|---|" + "---|" * (len(columns) + 2))
    for row in ROWS:
        if row not in results:
            continue
        entries = results[row]
        cells = [f"{entries[c]['ms']:.2f}" for c in columns]
        ratio = entries["ours fast"]["ms"] / entries["native"]["ms"]
        print(f"| {titles[row]} | " + " | ".join(cells) + f" | {ratio:.2f} | {entries['ours fast']['first_s']:.1f} |")
    print("\n| peak GPU memory above the resident weights (GiB) / achieved TFLOP/s | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for row in ROWS:
        if row not in results:
            continue
        entries = results[row]
        cells = []
        for c in columns:
            peak = entries[c]["peak"]
            memory = f"{peak / _common.GiB:.2f}" if peak is not None else "n/a (CPU)"
            tflops = f"{entries[c]['tflops']:.3g}" if "tflops" in entries[c] else "-"
            cells.append(f"{memory} / {tflops}")
        print(f"| {titles[row]} | " + " | ".join(cells) + " |")
    for row in ("c1", "c4", "b"):
        if row in results:
            print(f"{row}: {results[row]['flops'] / 1e12:.4g} TFLOP per step; fast vs eager {results[row]['fast_vs_eager']:.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny stand-in configs in fp32 (for the CPU)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows from {ROWS}")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed sampler call (default 10)")
    parser.add_argument("--runs", type=int, default=3, help="timed calls per column after the warm-up (default 3)")
    parser.add_argument("--fast-mode", default="cuda graphs", choices=["compile", "cuda graphs"],
                        help="SCPack_FastPath mode for 'ours fast' (default: cuda graphs)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend for 'ours fast' (default inductor)")
    options = parser.parse_args(argv)
    rows = [row.strip() for row in options.rows.split(",") if row.strip()]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}: expected some of {ROWS}")

    _common.import_host(cpu=options.tiny)
    import torch

    import comfy.model_management as mm
    from stable_cascade_pack.nodes.fast_path import apply_fast_path

    device = mm.get_torch_device()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else _common.machine_line()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    print(f"device: {device_name}; torch {torch.__version__}; weights {str(dtype).replace('torch.', '')}; "
          f"{'tiny stand-in' if options.tiny else 'released-size'} configs", flush=True)
    started = time.perf_counter()
    configs, shapes = network_configs(options.tiny), sizes(options.tiny)
    stages_needed = sorted({"c" for r in rows if r in ("c1", "c4", "e2e")} | {"b" for r in rows if r in ("b", "e2e")})
    results, all_models, fast_models = {}, {}, {}
    for stage in ("c", "b"):
        if stage not in stages_needed:
            continue
        print(f"\nStage {stage.upper()}: building seeded weights and both models", flush=True)
        weights = seeded_weights(stage_network(stage, configs[stage]), device, dtype)
        ours, native = build_models(stage, configs[stage], weights, options.tiny, dtype)
        del weights
        fast, note = apply_fast_path(ours, options.fast_mode, backend=options.backend)
        print(f"  weights: ours {ours.model_size() / _common.GiB:.2f} GiB, native {native.model_size() / _common.GiB:.2f} GiB; "
              f"fast path: {note}", flush=True)
        models = {"ours": ours, "native": native}
        stage_rows = [r for r in rows if (r in ("c1", "c4") if stage == "c" else r == "b")]
        results.update(bench_stage_rows(stage, stage_rows, models, fast, shapes[stage], shapes["prior"], options))
        if "e2e" in rows:
            all_models[stage], fast_models[stage] = models, fast
        else:
            del ours, native, fast, models
            mm.unload_all_models()
            gc.collect()
            mm.soft_empty_cache()
    if "e2e" in rows:
        results.update(bench_end_to_end(all_models, fast_models, stage_a_vaes(device), shapes, options))
    print_table(results, device_name, options)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
