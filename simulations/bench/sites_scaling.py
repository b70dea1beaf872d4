"""Round wall time and peak memory against the number of simulated sites (synthetic centres).

    python -m simulations.bench.sites_scaling --sites 2,4,8,16,32 --out scaling.json

Every site trains the same tiny workload (64-pixel images, 32-pixel crops, a 3-level U-Net of
widths 8-32, a few local steps), so the growth is what simulating more sites costs on one
machine: Flower runs the sites in turn in Ray actors, and the server waits for all of them. Memory
is sampled twice a second over the whole process tree of the simulation (SuperLink, SuperExec,
ServerApp, Ray's GCS, raylet and workers, the ClientApp actors): the peak of the summed resident
memory (RSS, which counts a shared library once per process that maps it) and of the summed
proportional set size (PSS, which splits shared pages; what the tree really occupies).
Round seconds are the server's own per-round times from ``rounds.jsonl``; under contention from
other jobs they are upper bounds.
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
from simulations.bench.common import tree_memory, write_result


class PeakMemory:
    """Samples the memory of every process this one started (and theirs) in a thread; keeps the peaks."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.rss_kib = self.pss_kib = self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            memory = tree_memory([os.getpid()], include_roots=False)
            self.rss_kib = max(self.rss_kib, memory.rss_kib)
            self.pss_kib = max(self.pss_kib, memory.pss_kib)
            self.processes = max(self.processes, memory.processes)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_once(n_sites: int, work: Path, rounds: int, local_steps: int, timeout: float) -> dict[str, Any]:
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
    started = time.perf_counter()
    try:
        with PeakMemory() as peak:
            completed = subprocess.run(
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
                text=True,
                check=False,
                timeout=timeout,
            )
    finally:
        launch.stop(superlink)
    records = read_jsonl(out / "rounds.jsonl") if (out / "rounds.jsonl").exists() else []
    if len(records) < rounds:
        raise SystemExit(f"{n_sites} sites: {len(records)} of {rounds} rounds finished\n{completed.stdout[-3000:]}")
    return {
        "sites": n_sites,
        "rounds": len(records),
        "wall_seconds": time.perf_counter() - started,
        "mean_round_seconds": sum(r["seconds"] for r in records) / len(records),
        "round_seconds": [r["seconds"] for r in records],
        "peak_memory_mib": peak.rss_kib / 1024,
        "peak_pss_mib": peak.pss_kib / 1024,
        "peak_processes": peak.processes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", default="2,4,8,16,32")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=3)
    parser.add_argument("--timeout-minutes", type=float, default=30.0, help="per simulation")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sites-scaling-") as work:
        results = [
            run_once(int(n), Path(work), args.rounds, args.local_steps, args.timeout_minutes * 60)
            for n in args.sites.split(",")
        ]
    write_result(args.out, "sites_scaling", results, rounds=args.rounds, local_steps=args.local_steps)


if __name__ == "__main__":
    main()
