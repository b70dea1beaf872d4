"""What encrypted, masked aggregation costs: bytes and seconds per site and round, and round wall time.

    python -m simulations.bench.he_overhead --out he.json                     # default model, 3 sites
    python -m simulations.bench.he_overhead --round-time --rounds 2 \\
        --local-steps 20 --batch-size 8 --crop-size 128                      # + simulated rounds, HE on and off

The measured mode is fedseg's default with a site registry: every update weighted, masked with
one pairwise mask per other site, CKKS-encrypted and signed (``fedseg.crypto.protection``); the
server sums, and the sites decrypt. Keys use the default parameters (``fedseg keys``).
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
from fedseg.crypto.packing import Layout, decrypt_average
from fedseg.crypto.protection import RoundTicket, SiteProtection
from fedseg.crypto.registry import build_registry, load_node_key, write_registry
from fedseg.deploy.credentials import make_node_key
from fedseg.models import ModelConfig, build_model
from fedseg.models.state import model_state
from server.aggregators import Contribution, EncryptedAggregator
from simulations.bench.common import write_result


def credentials(work: Path, names: list[str]) -> Path:
    """CKKS keys, node keys and the site registry for ``names`` (what the key ceremony makes)."""
    if not (work / "he").exists():
        generate_keys(work / "he")
    for name in names:
        if not (work / "node-keys" / f"{name}.key").exists():
            make_node_key(work / "node-keys", name)
    write_registry(work / "federation.json", build_registry([work / "node-keys" / f"{n}.pub" for n in names]))
    return work


def _timed(function, *args):
    """(result, wall seconds, CPU seconds of this process): CPU time stays meaningful on a busy machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def micro(model: ModelConfig, sites: int) -> dict[str, Any]:
    """One masked round's crypto on the default model, one process (encryption workers = 1)."""
    names = [f"site-{i}" for i in range(sites)]
    work = credentials(Path(tempfile.mkdtemp()), names)
    he = load_context(work / "he" / "site.context", expect="site")
    server = load_context(work / "he" / "server.context", expect="server")
    registry = build_registry([work / "node-keys" / f"{n}.pub" for n in names])
    protections = [
        SiteProtection(n, he=he, node_key=load_node_key(work / "node-keys" / f"{n}.key"), registry=registry, workers=1)
        for n in names
    ]
    ticket = RoundTicket("bench", 1, tuple(names), weight_total=100 * sites, max_sites=sites)
    updates = []
    for index in range(sites):
        torch.manual_seed(index)
        updates.append(model_state(build_model(model)))
    layout, fixed = Layout.of(updates[0]), ticket.fixed(he)
    protected, protect_wall, protect_cpu = _timed(
        lambda: [p.protect(u, 100, ticket) for p, u in zip(protections, updates)]
    )
    aggregator = EncryptedAggregator(server, layout, masked=True, min_sites=2)

    def reveal(survivors, dropped):
        return {s: protections[names.index(s)].reveal(ticket, tuple(dropped), min_sites=2) for s in survivors}

    contributions = [Contribution(n, 100, p.payload) for n, p in zip(names, protected)]
    aggregate, aggregate_wall, aggregate_cpu = _timed(
        lambda: aggregator.aggregate(contributions, current={}, ticket=ticket, reveal=reveal)
    )
    if aggregate.model is None or aggregate.rejected:
        raise RuntimeError(f"the benchmark's own updates were refused: {aggregate.rejected}")
    _, decrypt_wall, decrypt_cpu = _timed(decrypt_average, aggregate.model, he, layout)
    fp32 = 4 * layout.size
    up = protected[0].payload.nbytes  # type: ignore[union-attr]
    return {
        "mode": protections[0].mode,
        "parameters": layout.size,
        "fp32_bytes": fp32,
        "bytes_up_per_site": up,
        "bytes_down_per_site": aggregate.model.nbytes,  # type: ignore[union-attr]
        "up_ratio_vs_fp32": up / fp32,
        "fixed_point": str(fixed),
        "protect_seconds_per_site": protect_wall / sites,
        "protect_cpu_seconds_per_site": protect_cpu / sites,
        "aggregate_seconds": aggregate_wall,
        "aggregate_cpu_seconds": aggregate_cpu,
        "decrypt_seconds_per_site": decrypt_wall,
        "decrypt_cpu_seconds_per_site": decrypt_cpu,
        "sites": sites,
    }


def round_time(rounds: int, he: bool, work: Path, profile: dict[str, Any]) -> dict[str, Any]:
    """Mean round seconds of a simulation on synthetic centres (default model), with or without HE."""
    from fedseg.data.synth import SynthConfig, generate
    from fedseg.files import read_jsonl
    from simulations.launch import simulate

    data = work / "data"
    if not (data / "synth.json").exists():
        generate(SynthConfig(out=data, centres=3, images=24, size=256), progress=False)
    out = work / ("he" if he else "plain")
    config: dict[str, Any] = {
        "experiment": "he-overhead",
        "site-map": "centre-01,centre-02,heldout:centre-03",
        "data-root": str(data),
        "out": str(out),
        "num-server-rounds": rounds,
        "resume": False,
        "device": "cpu",
        **profile,
    }
    if he:
        credentials(work, ["centre-01", "centre-02", "centre-03"])
        config.update(
            {
                "he": True,
                "he-keys": str(work / "he"),
                "registry": str(work / "federation.json"),
                "node-keys": str(work / "node-keys"),
            }
        )
    simulate(config, quiet=True)
    records = read_jsonl(out / "rounds.jsonl")
    if not records:
        raise RuntimeError(f"the {'HE' if he else 'plaintext'} simulation wrote no round; see {out}")
    mean = sum(r["seconds"] for r in records) / len(records)
    return {"he": he, "rounds": len(records), "mean_round_seconds": mean, "he_stats": records[-1].get("he")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--round-time", action="store_true", help="also time simulated rounds with and without HE")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {"default_model": micro(ModelConfig(), args.sites)}
    if args.round_time:
        work = Path(tempfile.mkdtemp())
        profile = {"local-steps": args.local_steps, "batch-size": args.batch_size, "crop-size": args.crop_size}
        plain, encrypted = round_time(args.rounds, False, work, profile), round_time(args.rounds, True, work, profile)
        results["round_time"] = {
            "profile": profile,
            "plain": plain,
            "he": encrypted,
            "he_overhead": encrypted["mean_round_seconds"] / plain["mean_round_seconds"] - 1,
        }
    write_result(args.out, "he_overhead", results, sites=args.sites)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    main()
