"""benchmarks/bench_gpu.py runs every row and column on the CPU with --tiny (the GPU run uses the
same code with the released sizes), and its fast column equals its eager one."""
import math
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_gpu_tiny_prints_the_whole_table(host_modules, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_gpu
    finally:
        sys.path.remove(str(BENCHMARKS))

    results = bench_gpu.main(["--tiny", "--backend", "aot_eager", "--steps", "1", "--runs", "1"])
    printed = capsys.readouterr().out
    assert set(results) == {"c1", "c4", "b", "e2e"}
    for row, entries in results.items():
        for column in ("ours eager", "ours fast", "native"):
            assert entries[column]["ms"] > 0 and math.isfinite(entries[column]["ms"]), (row, column)
        if row != "e2e":
            assert entries["flops"] > 0
            assert entries["fast_vs_eager"] <= 1e-5, (row, entries["fast_vs_eager"])
    assert "fell back to plain compile" in printed  # "cuda graphs" on the CPU says so
    assert "| Stage C, batch 4, ms/step |" in printed and "| text-to-image" in printed
    assert printed.count("finite True") == 12
