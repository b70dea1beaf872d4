"""What encrypted aggregation costs: bytes and seconds per site and round, and round wall time.

    python -m simulations.bench.he_overhead --out he.json                 # default model, 3 sites
    python -m simulations.bench.he_overhead --round-time --rounds 3       # + simulated rounds with and without HE

Encryption uses the default key parameters (``fedseg keys``); the model is the default U-Net.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedseg.crypto.keys import generate_keys, load_context
from fedseg.crypto.packing import Layout, add_encrypted, decrypt_average, encrypt_weighted
from fedseg.models import ModelConfig, build_model
from fedseg.models.state import model_state
from simulations.bench.common import write_result


def micro(model: ModelConfig, sites: int, workers: int) -> dict[str, Any]:
    keys = Path(tempfile.mkdtemp()) / "keys"
    generate_keys(keys)
    site = load_context(keys / "site.context", expect="site")
    server = load_context(keys / "server.context", expect="server")
    updates = []
    for index in range(sites):
        torch.manual_seed(index)
        updates.append(model_state(build_model(model)))
    layout = Layout.of(updates[0])
    started = time.perf_counter()
    encrypted = [encrypt_weighted(u, 100.0 + i, site, workers=workers) for i, u in enumerate(updates)]
    encrypt = (time.perf_counter() - started) / sites
    started = time.perf_counter()
    total, rejected = add_encrypted(encrypted, server, layout_hash=layout.hash, length=layout.size)
    aggregate = time.perf_counter() - started
    assert total is not None and not rejected
    started = time.perf_counter()
    decrypt_average(total, site, layout)
    decrypt = time.perf_counter() - started
    fp32 = 4 * layout.size
    return {
        "parameters": layout.size,
        "fp32_bytes": fp32,
        "bytes_up_per_site": encrypted[0].nbytes,
        "bytes_down_per_site": total.nbytes,
        "up_ratio_vs_fp32": encrypted[0].nbytes / fp32,
        "encrypt_seconds_per_site": encrypt,
        "aggregate_seconds": aggregate,
        "decrypt_seconds_per_site": decrypt,
        "encrypt_workers": workers,
        "sites": sites,
    }


def round_time(rounds: int, he: bool, work: Path) -> dict[str, Any]:
    """Mean round seconds of a demo-sized simulation (synthetic centres), with or without HE."""
    from fedseg.data.synth import SynthConfig, generate
    from fedseg.files import read_jsonl
    from simulations.launch import simulate

    data = work / "data"
    if not (data / "synth.json").exists():
        generate(SynthConfig(out=data, centres=3, images=24, size=128), progress=False)
    out = work / ("he" if he else "plain")
    config: dict[str, Any] = {
        "experiment": "he-overhead",
        "site-map": "centre-01,centre-02,heldout:centre-03",
        "data-root": str(data),
        "out": str(out),
        "num-server-rounds": rounds,
        "local-steps": 10,
        "batch-size": 8,
        "crop-size": 64,
        "resume": False,
    }
    if he:
        generate_keys(work / "keys") if not (work / "keys").exists() else None
        config.update({"he": True, "he-keys": str(work / "keys")})
    simulate(config, quiet=True)
    records = read_jsonl(out / "rounds.jsonl")
    return {"he": he, "rounds": len(records), "mean_round_seconds": sum(r["seconds"] for r in records) / len(records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--round-time", action="store_true", help="also time simulated rounds with and without HE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"default_model": micro(ModelConfig(), args.sites, args.workers)}
    if args.round_time:
        work = Path(tempfile.mkdtemp())
        plain, encrypted = round_time(args.rounds, False, work), round_time(args.rounds, True, work)
        results["round_time"] = {
            "plain": plain,
            "he": encrypted,
            "he_overhead": encrypted["mean_round_seconds"] / plain["mean_round_seconds"] - 1,
        }
    write_result(args.out, "he_overhead", results, sites=args.sites)


if __name__ == "__main__":
    main()
