"""Round wall time and peak memory against the number of simulated sites (synthetic centres).

    python -m simulations.bench.sites_scaling --sites 2,4,8,16,32 --out scaling.json

Every site trains the same small workload, so the growth is what simulating more sites costs on
one machine (Flower runs sites in turn in Ray actors). Memory is the peak, sampled twice a second,
of the summed resident memory of every process of the simulation: SuperLink, SuperExec, ServerApp,
Ray (raylet, GCS, workers) and the ClientApp actors.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import tomli_w

from fedseg.data.synth import SynthConfig, generate
from fedseg.files import read_jsonl
from simulations import launch
from simulations.bench.common import write_result

SIMULATION_PROCESSES = ("flower", "flwr", "ray::", "raylet", "gcs_server", "ray/", "ClientAppActor", "default_worker")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def simulation_rss_kib() -> int:
    """Summed resident memory (KiB) of the processes that make up a Flower simulation."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            command = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if any(marker in command for marker in SIMULATION_PROCESSES):
                total += int(Path(entry.path, "statm").read_text().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue
    return total


def run_once(n_sites: int, work: Path, rounds: int, local_steps: int) -> dict[str, Any]:
    data = work / f"data-{n_sites}"
    generate(SynthConfig(out=data, centres=n_sites + 1, images=8, size=64), progress=False)
    names = [f"centre-{i + 1:02d}" for i in range(n_sites + 1)]
    out = work / f"run-{n_sites}"
    config = {
        "experiment": "sites-scaling",
        "site-map": ",".join(names[:-1] + [f"heldout:{names[-1]}"]),
        "data-root": str(data),
        "out": str(out),
        "num-server-rounds": rounds,
        "local-steps": local_steps,
        "batch-size": 4,
        "crop-size": 32,
        "tile-size": 64,
        "model-options": '{"widths": [8, 16, 32]}',
        "resume": False,
        "val-fraction": 0.25,
    }
    (out).mkdir(parents=True, exist_ok=True)
    (out / "run-config.toml").write_text(tomli_w.dumps(config))
    port = launch.free_port(launch.DEFAULT_PORT)
    launch.write_flower_config(port)
    superlink = launch.start_superlink(port)
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], simulation_rss_kib())
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        subprocess.run(
            [
                str(launch.bin_dir() / "flwr"),
                "run",
                str(launch.REPO),
                launch.CONNECTION,
                "--stream",
                "--run-config",
                str(out / "run-config.toml"),
                "--federation-config",
                f"num-supernodes={n_sites + 1}",
            ],
            cwd=launch.REPO,
            env=launch.flower_env(),
            capture_output=True,
            check=False,
        )
    finally:
        stop.set()
        launch.stop(superlink)
    records = read_jsonl(out / "rounds.jsonl")
    return {
        "sites": n_sites,
        "rounds": len(records),
        "wall_seconds": time.perf_counter() - started,
        "mean_round_seconds": sum(r["seconds"] for r in records) / max(1, len(records)),
        "peak_memory_mib": peak[0] / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", default="2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    results = [run_once(int(n), work, args.rounds, args.local_steps) for n in args.sites.split(",")]
    write_result(args.out, "sites_scaling", results, rounds=args.rounds, local_steps=args.local_steps)


if __name__ == "__main__":
    main()
