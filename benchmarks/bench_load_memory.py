"""Load time and peak memory: our Stage C loader beside the host's UNETLoader, same file.

    python benchmarks/bench_load_memory.py            # fp32 Stage C lite file (3.8 GiB)
    python benchmarks/bench_load_memory.py --bf16     # and the bf16 one (1.9 GiB)
    python benchmarks/bench_load_memory.py --runs 1   # one run per loader (quicker)

The first run writes full-size Stage C lite files of seeded random weights in the ORIGINAL
layout (as released: packed in_proj q/k/v) under ~/.cache/stable-cascade-comfyui/bench/, one
tensor at a time, and keeps them. Then every measurement runs in a FRESH subprocess (so the
process's peak resident memory belongs to that one load):

    import torch + host + pack  -> baseline RSS
    load (timed)                -> peak RSS of the load (VmHWM and ru_maxrss)
    read every weight once      -> peak RSS after first use

"ours" is SCPack_StageCLoader.execute(name, "default"), "host" is nodes.UNETLoader().load_unet(
name, "default"); both leave the weight dtype to the host's policy (fp32 on CPU). Runs alternate
between the two loaders so that load from other processes on the machine hits both alike. The
file is read once beforehand so every run finds it in the page cache.

Why "after first use": a memory-mapped safetensors tensor only becomes resident when read, so a
loader that keeps the file's tensors (no copy) looks cheap right after loading; the figure after
reading every weight once is what a sampler actually costs. File-backed pages are shared with
the page cache and can be dropped under pressure; copied (anonymous) pages cannot.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import _common  # beside this file: python puts the script's folder on sys.path
from _common import BENCH_DIR, GiB, median

FILES = {
    "float32": "bench_stage_c_lite_fp32.safetensors",
    "bfloat16": "bench_stage_c_lite_bf16.safetensors",
}
LOADERS = ("ours", "host")


def ensure_file(dtype_name):
    path = BENCH_DIR / FILES[dtype_name]
    if not path.exists():
        print(f"writing {path} (seeded random Stage C lite, original layout, {dtype_name}) ...", flush=True)
        started = time.perf_counter()
        _common.register_pack()
        _common.write_safetensors_streaming(path, _common.original_layout_shapes("stage_c_lite"), dtype_name, seed=0)
        print(f"  done in {time.perf_counter() - started:.0f} s, {path.stat().st_size / GiB:.2f} GiB", flush=True)
    return path


def warm_page_cache(path):
    with open(path, "rb") as file:
        while file.read(64 << 20):
            pass


# --- One measurement (runs in the child process) -------------------------------------------------

def measure_one(loader, path):
    import torch

    _common.import_host()
    import folder_paths
    import nodes as host_nodes

    from stable_cascade_pack.nodes.loaders import StageCLoader

    folder_paths.add_model_folder_path("diffusion_models", str(path.parent), is_default=True)
    baseline = _common.proc_status()

    started = time.perf_counter()
    if loader == "ours":
        model = StageCLoader.execute(path.name, "default").result[0]
    else:
        model = host_nodes.UNETLoader().load_unet(path.name, "default")[0]
    seconds = time.perf_counter() - started
    after_load = _common.proc_status()
    maxrss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    # First use: read every weight once (what the first sampling step does).
    with torch.no_grad():
        checksum = sum(float(p.float().abs().sum()) for p in model.model.diffusion_model.parameters())
    after_use = _common.proc_status()
    maxrss_use = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    storage = {str(p.dtype) for p in model.model.diffusion_model.parameters()}
    return {
        "loader": loader, "file": path.name, "seconds": seconds,
        "baseline_rss": baseline["VmRSS"], "baseline_hwm": baseline["VmHWM"],
        "load_hwm": after_load["VmHWM"], "load_maxrss": maxrss_load,
        "load_rss_anon": after_load["RssAnon"], "load_rss_file": after_load["RssFile"],
        "use_hwm": after_use["VmHWM"], "use_maxrss": maxrss_use,
        "use_rss_anon": after_use["RssAnon"], "use_rss_file": after_use["RssFile"],
        "weight_dtypes": sorted(storage), "checksum": checksum,
    }


def run_child(loader, path):
    command = [sys.executable, __file__, "--child", loader, "--file", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{loader} on {path.name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Report ---------------------------------------------------------------------------------------

def summarise(results, path):
    size = path.stat().st_size
    rows = {}
    for loader in LOADERS:
        mine = [r for r in results if r["loader"] == loader]
        rows[loader] = {
            "seconds": median([r["seconds"] for r in mine]),
            "baseline": median([r["baseline_rss"] for r in mine]),
            "load_peak": median([max(r["load_hwm"], r["load_maxrss"]) for r in mine]),
            "use_peak": median([max(r["use_hwm"], r["use_maxrss"]) for r in mine]),
            "anon": median([r["use_rss_anon"] for r in mine]),
            "file_backed": median([r["use_rss_file"] for r in mine]),
            "dtypes": mine[0]["weight_dtypes"],
            "checksum": mine[0]["checksum"],
        }
    print(f"\n{path.name}: {size / GiB:.2f} GiB, {len(results) // 2} run(s) per loader (median)")
    print(f"  baseline RSS after importing torch + host + pack: ours {rows['ours']['baseline'] / GiB:.2f} GiB, "
          f"host {rows['host']['baseline'] / GiB:.2f} GiB")
    header = (f"  {'loader':<6} {'seconds':>8} {'peak RSS load':>14} {'/ file':>7} {'peak-baseline':>14} {'/ file':>7}"
              f" {'peak RSS 1st use':>17} {'/ file':>7}  {'anon/file-backed after use':>27}  weights")
    print(header)
    for loader in LOADERS:
        row = rows[loader]
        delta = row["load_peak"] - row["baseline"]
        print(f"  {loader:<6} {row['seconds']:>8.2f} {row['load_peak'] / GiB:>11.2f} GiB {row['load_peak'] / size:>7.2f}"
              f" {delta / GiB:>11.2f} GiB {delta / size:>7.2f} {row['use_peak'] / GiB:>14.2f} GiB {row['use_peak'] / size:>7.2f}"
              f"  {row['anon'] / GiB:>11.2f} / {row['file_backed'] / GiB:.2f} GiB  {','.join(row['dtypes'])}")
    ours, host = rows["ours"], rows["host"]
    print(f"  ratio ours/host: time {ours['seconds'] / host['seconds']:.2f}, peak RSS at load "
          f"{ours['load_peak'] / host['load_peak']:.2f} (above baseline "
          f"{(ours['load_peak'] - ours['baseline']) / (host['load_peak'] - host['baseline']):.2f}), "
          f"peak RSS after first use {ours['use_peak'] / host['use_peak']:.2f}")
    if abs(ours["checksum"] - host["checksum"]) > 1e-3 * abs(host["checksum"]):
        print(f"  WARNING: the loaded weights differ (sum |w|: ours {ours['checksum']:.6g}, host {host['checksum']:.6g})")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bf16", action="store_true", help="also measure a bf16 file (1.9 GiB, written once)")
    parser.add_argument("--runs", type=int, default=3, help="fresh-process runs per loader and file (default 3)")
    parser.add_argument("--child", choices=LOADERS, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.child:
        print(json.dumps(measure_one(options.child, options.file)))
        return

    import torch

    print(f"machine: {_common.machine_line()}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (the machine is shared: other processes may run)")
    dtypes = ["float32"] + (["bfloat16"] if options.bf16 else [])
    paths = [ensure_file(dtype_name) for dtype_name in dtypes]
    del torch
    for path in paths:
        warm_page_cache(path)
        results = []
        for run in range(options.runs):
            for loader in (LOADERS if run % 2 == 0 else LOADERS[::-1]):
                result = run_child(loader, path)
                print(f"  run {run + 1} {loader:<4}: {result['seconds']:.2f} s, peak RSS at load "
                      f"{max(result['load_hwm'], result['load_maxrss']) / GiB:.2f} GiB, after first use "
                      f"{max(result['use_hwm'], result['use_maxrss']) / GiB:.2f} GiB", flush=True)
                results.append(result)
        summarise(results, path)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
