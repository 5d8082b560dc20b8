"""The main job: run the real host (ComfyUI 0.3.75, CPU) with this pack installed, end to end.

Run it with the environment's python (the README's first command):

    "$(bash scripts/setup_env.sh --print-python)" scripts/run_main_job.py

What it does today: starts the host with the pack linked into a fresh base directory
(out/main_job/ by default), checks that the host registered the pack's nodes and logged no import
error for it, prints them, and stops the host. The text-to-image workflow
(example_workflows/text_to_image_api.json -> a PNG) is not wired in yet: it arrives with issue #4.
Exit status 0 on success, 1 with the host's log tail on failure.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_host_server():
    """tests/host_server.py: the same host runner the test suite uses (plain Python, no pytest)."""
    spec = importlib.util.spec_from_file_location("host_server", REPO_ROOT / "tests" / "host_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["host_server"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-dir", type=Path, default=REPO_ROOT / "out" / "main_job",
                        help="the host's base directory (models/, custom_nodes/, output/, host.log)")
    parser.add_argument("--start-timeout", type=float, default=600.0,
                        help="seconds to wait for the host to answer (about 30 s on 2 cores)")
    args = parser.parse_args(argv)

    host_server = _load_host_server()
    server = host_server.HostServer(args.base_dir)
    print(f"[main job] starting the host from {server.host_dir} (log: {server.log_path})", flush=True)
    started = time.monotonic()
    try:
        server.start(timeout=args.start_timeout)
        print(f"[main job] the host answers on {server.url} after {time.monotonic() - started:.0f} s",
              flush=True)
        nodes = server.pack_nodes()
        if not nodes:
            raise host_server.HostError("the host runs but registered no node from the pack:\n"
                                        + server.log_tail())
        print(f"[main job] {len(nodes)} pack nodes registered:")
        for node_id, info in sorted(nodes.items()):
            print(f"  {node_id:32s} {info.get('category')}  ({info.get('display_name')})")
        print("[main job] the text-to-image workflow (example_workflows/text_to_image_api.json -> PNG)"
              " is not part of this job yet: it arrives with issue #4.")
    except host_server.HostError as exc:
        print(f"[main job] FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        server.stop()
        print("[main job] host stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
