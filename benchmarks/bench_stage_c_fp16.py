"""Stage C in fp32, bf16 and fp16 (rescaled, stages/fp16_rescale.py): seconds per step and peak memory.

    python benchmarks/bench_stage_c_fp16.py            # on a GPU: Stage C 3.6B at 1024² (latent 24x24)
    python benchmarks/bench_stage_c_fp16.py --lite     # the 1B lite model instead
    python benchmarks/bench_stage_c_fp16.py --quick    # anywhere: a tiny network, only the table's shape

One step of the GDF sampler with CFG is one network call on the doubled batch (2), so "s/step" is
the median wall time of that call (after warm-up, synchronised). Peak memory is the GPU's
max_memory_allocated from the weights' upload to the end of the timed calls (on the CPU: "-").
"vs fp32" is max |out - out_fp32| / max |out_fp32| on the same inputs.

The weights are seeded random (N(0, 1/fan_in), as in the other benchmarks); no real Stage C file
exists where this was written. Seeded weights do not grow past fp16's range the way the released
ones do in their last block group, so the FiLM (1 + a) of the last up-level's TimestepBlocks is
biased to multiply the stream by about 10^5 over that group, like the released model: then the
calibration finds real factors, the "fp16 rescaled" row does the work the real file causes, and
"fp16 plain" shows what plain fp16 gives (inf/NaN). Timing the plain row still tells what the
rescaling costs.
"""
import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

TINY = dict(c_hidden=[64, 64], nhead=[1, 1], blocks=[[1, 2], [2, 3]], block_repeat=[[1, 1], [1, 1]],
            level_config=["CTA", "CTA"], c_cond=64, c_r=64, c_clip_seq=4, dropout=[0, 0])


def build(variant, quick, dtype, device, state_dict):
    import torch

    from stable_cascade_pack.stages.stage_c import StageC
    from stable_cascade_pack.stages.variants import build_released

    network = StageC(**TINY, device="meta") if quick else build_released(variant, device="meta")
    if state_dict:
        network.load_state_dict({key: value.to(device=device, dtype=dtype) for key, value in state_dict.items()}, assign=True)
    return network.eval().requires_grad_(False)


def seeded_weights(variant, quick):
    from stable_cascade_pack.stages.stage_c import StageC

    if not quick:
        return _common.seeded_state_dict(variant)
    shapes = {key: tuple(value.shape) for key, value in StageC(**TINY, device="meta").state_dict().items()}
    return {key: _common.seeded_tensor(key, shape, 0) for key, shape in shapes.items()}


def inputs(latent, device):
    import torch

    generator = torch.Generator().manual_seed(0)
    batch = 2  # conditional + unconditional
    return dict(
        x=torch.randn(batch, 16, latent, latent, generator=generator).to(device),
        r=torch.tensor([0.7, 0.7]).to(device),
        clip_text=torch.randn(batch, 77, 1280, generator=generator).to(device),
        clip_text_pooled=torch.randn(batch, 1, 1280, generator=generator).to(device),
        clip_img=torch.zeros(batch, 1, 768).to(device),
    )


def grow_last_group(network_builder, state_dict, total_growth=1e5):
    """`state_dict` with the FiLM `a` of the last up-level's TimestepBlocks raised so that together they
    multiply the stream by about `total_growth` (what the released Stage C's last group does)."""
    network = network_builder()
    last = len(network.up_blocks) - 1
    films = [f"up_blocks.{last}.{k}.mapper.bias" for k, block in enumerate(network.up_blocks[-1]) if hasattr(block, "film")]
    growth = total_growth ** (1 / len(films))
    grown = dict(state_dict)
    for key in films:
        bias = grown[key].clone()
        bias[: bias.numel() // 2] += growth - 1
        grown[key] = bias
    return grown


def time_calls(call, device, runs, warmup=2):
    """(median seconds, last output) of `call()`, synchronised on a GPU."""
    import torch

    def timed():
        start = time.perf_counter()
        out = call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    for _ in range(warmup):
        timed()
    results = [timed() for _ in range(runs)]
    return statistics.median(seconds for seconds, _ in results), results[-1][1]


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network, 6x6 latent, any device")
    parser.add_argument("--lite", action="store_true", help="Stage C lite (1B) instead of 3.6B")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latent", type=int, default=None, help="latent side (default 24 = 1024², 6 with --quick)")
    args = parser.parse_args()
    _common.register_pack()
    from stable_cascade_pack.stages.fp16_rescale import RescaledStream, calibrate_block_scales, calibration_inputs

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variant = "stage_c_lite" if args.lite else "stage_c"
    latent = args.latent or (6 if args.quick else 24)
    what = "tiny test network" if args.quick else variant
    print(f"Stage C fp16 benchmark: {what}, latent {latent}x{latent} ({latent * 128 // 3}² image), batch 2 (CFG), "
          f"{args.runs} runs, device {torch.cuda.get_device_name() if device.type == 'cuda' else _common.machine_line()}")
    state_dict = seeded_weights(variant, args.quick)
    state_dict = grow_last_group(lambda: build(variant, args.quick, None, "meta", {}), state_dict)
    example = inputs(latent, device)

    rows, reference, factors = [], None, None
    for label, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16 rescaled", torch.float16),
                         ("fp16 plain", torch.float16)]:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        network = build(variant, args.quick, dtype, device, state_dict)
        if dtype == torch.float32:
            factors = calibrate_block_scales(network, calibration_inputs(network, device=device))
        typed = {k: v if k == "r" else v.to(dtype) for k, v in example.items()}
        if label == "fp16 rescaled":  # a fresh stream per call: it counts the block calls
            seconds, out = time_calls(lambda: network(**typed, stream=RescaledStream(factors)), device, args.runs)
        else:
            seconds, out = time_calls(lambda: network(**typed), device, args.runs)
        peak = f"{torch.cuda.max_memory_allocated() / _common.GiB:.2f}" if device.type == "cuda" else "-"
        out = out.float()
        if reference is None:
            reference = out
        difference = ((out - reference).abs().max() / reference.abs().max()).item()
        rows.append((label, seconds, peak, difference, bool(torch.isfinite(out).all())))
        del network, out
    print(f"{'dtype':<14} {'s/step':>9} {'peak GiB':>9} {'vs fp32':>9} {'finite':>6}")
    for label, seconds, peak, difference, finite in rows:
        print(f"{label:<14} {seconds:>9.4f} {peak:>9} {difference:>9.2e} {str(finite):>6}")
    print(f"fp16 factors below 1: {sum(f < 1 for f in factors)} of {len(factors)} block calls")


if __name__ == "__main__":
    import torch

    with torch.inference_mode():
        main()
