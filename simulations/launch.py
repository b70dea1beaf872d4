"""Run a named experiment as a Flower simulation on this machine, in one command.

    python -m simulations.launch demo
    python -m simulations.launch retina-loco --set num-server-rounds=10 --set device=cuda
    python -m simulations.launch superlink        # only start a SuperLink, print the flwr command, wait

It (1) makes the demo's synthetic data if missing, (2) resolves the experiment's relative paths
against the repository, (3) starts a SuperLink in simulation mode that runs the apps in this
environment (no per-run dependency install), (4) runs
``flwr run . fedseg-sim --stream --run-config <config> --federation-config num-supernodes=<sites>``
and (5) stops the SuperLink. The Flower config lives in ``.flwr/`` of the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w

from fedseg.configuration import ConfigError
from fedseg.federation.config import FederationConfig, override_value, read_run_config
from fedseg.signals import exit_code_of, stop_on_signals, stop_process_group
from server.superlink import wait_until_listening

REPO = Path(__file__).resolve().parents[1]


def flwr_home() -> Path:
    """Flower's config and app store for fedseg's simulations (``FEDSEG_FLWR_HOME``, default ``.flwr/``)."""
    return Path(os.environ.get("FEDSEG_FLWR_HOME", REPO / ".flwr"))


CONNECTION = "fedseg-sim"
DEFAULT_PORT = int(os.environ.get("FEDSEG_SUPERLINK_PORT", "39293"))
PATH_KEYS = ("data-root", "out", "init-checkpoint")
DEMO_SYNTH = {"centres": 4, "images": 300, "size": 128}
# The demo's public prior (`fedseg prior`): generated images in widely varied looks, no DP, the demo's model.
DEMO_PRIOR = {"kind": "both", "size": 128, "crop-size": 64, "batch-size": 32, "steps": 600, "lr": 0.01}


def bin_dir() -> Path:
    return Path(sys.executable).parent


def experiment_config(name: str, overrides: list[str]) -> dict[str, Any]:
    path = REPO / "simulations" / f"{name}.toml"
    if not path.exists():
        known = sorted(p.stem for p in (REPO / "simulations").glob("*.toml"))
        raise SystemExit(f"no experiment '{name}' ({path} not found); experiments: {', '.join(known)}")
    try:
        config = read_run_config(path)
        for item in overrides:
            config[item.partition("=")[0].strip()] = override_value(item)
        FederationConfig.from_run_config(config)  # fail here, before a SuperLink starts, on any bad value
    except ConfigError as error:
        raise SystemExit(f"{path}: {error}") from None
    for key in PATH_KEYS:
        if config.get(key) and not Path(config[key]).is_absolute():
            config[key] = str((REPO / config[key]).resolve())
    return config


def write_flower_config(port: int) -> None:
    flwr_home().mkdir(parents=True, exist_ok=True)
    config = {"superlink": {"default": CONNECTION, CONNECTION: {"address": f"127.0.0.1:{port}", "insecure": True}}}
    (flwr_home() / "config.toml").write_text(tomli_w.dumps(config))


def free_port(preferred: int) -> int:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def flower_env() -> dict[str, str]:
    env = dict(os.environ, FLWR_HOME=str(flwr_home()), PATH=f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}")
    env.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray starts its workers at nice 15: simulated sites would yield to anything else on the machine.
    env.setdefault("RAY_worker_niceness", "0")
    return env


def start_superlink(port: int) -> subprocess.Popen:
    """A SuperLink in simulation mode whose apps run in this environment (``--disable-runtime-...``)."""
    log = open(flwr_home() / "superlink.log", "ab")  # noqa: SIM115 (closed with the process)
    command = [
        str(bin_dir() / "flower-superlink"),
        "--insecure",
        "--simulation",
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=flower_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until_listening(process, port, flwr_home() / "superlink.log")
    except RuntimeError as error:
        stop(process)
        raise SystemExit(str(error)) from None
    except BaseException:  # a signal while it starts: it must not outlive us
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen) -> None:
    """Stop the SuperLink and everything it started (SuperExec, simulation, Ray): its whole process group."""
    stop_process_group(process, grace=20.0)


def make_demo_data(config: dict[str, Any]) -> None:
    root = Path(config["data-root"])
    if (root / "synth.json").exists():
        return
    command = [str(bin_dir() / "fedseg"), "synth", "--out", str(root), "--seed", str(config.get("seed", 0))]
    command += [f"--{k}={v}" for k, v in DEMO_SYNTH.items()]
    subprocess.run(command, check=True)


def make_demo_prior(config: dict[str, Any]) -> None:
    """Pre-train the run's ``init-checkpoint`` on generated images (public data: no privacy spent) if missing."""
    checkpoint = Path(config["init-checkpoint"]) if config.get("init-checkpoint") else None
    if checkpoint is None or checkpoint.exists():
        return
    command = [str(bin_dir() / "fedseg"), "prior", "--out", str(checkpoint.parent)]
    command += [f"--{k}={v}" for k, v in DEMO_PRIOR.items()] + [f"--seed={config.get('seed', 0)}"]
    command += [f"--model={config.get('model', 'unet')}", f"--channels={config.get('channels', 3)}"]
    options = json.loads(config.get("model-options") or "{}")
    command += [f"--model-option={k}={json.dumps(v)}" for k, v in options.items()]
    subprocess.run(command, check=True)
    if checkpoint.name != "prior.pt" or not checkpoint.exists():
        raise SystemExit(f"fedseg prior wrote {checkpoint.parent / 'prior.pt'}; set init-checkpoint to that file")


def simulate(
    config: dict[str, Any], *, quiet: bool = False, timeout: float | None = None
) -> subprocess.CompletedProcess:
    """Run one simulation of ``config`` (a run config with absolute paths) on a SuperLink of its own.

    With ``timeout`` (seconds) a simulation that runs longer is stopped and ``subprocess.TimeoutExpired``
    raised; the rounds it finished are in its run folder.
    """
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    run_config = out / "run-config.toml"
    run_config.write_text(tomli_w.dumps(config))
    n_sites = len([s for s in config["site-map"].split(",") if s.strip()])
    port = free_port(DEFAULT_PORT)
    write_flower_config(port)
    superlink = start_superlink(port)
    try:
        command = [
            str(bin_dir() / "flwr"),
            "run",
            str(REPO),
            CONNECTION,
            "--stream",
            "--run-config",
            str(run_config),
            "--federation-config",
            f"num-supernodes={n_sites}",
        ]
        if not quiet:
            print("$ " + " ".join(command), flush=True)
        return subprocess.run(
            command, cwd=REPO, env=flower_env(), check=False, capture_output=quiet, text=True, timeout=timeout
        )
    finally:
        stop(superlink)


def run_experiment(name: str, overrides: list[str]) -> int:
    config = experiment_config(name, overrides)
    if name == "demo":
        make_demo_data(config)
        make_demo_prior(config)
    simulate(config)
    code = report(Path(config["out"]), config)
    if code == 0 and name == "demo":
        show_heldout(config)
    return code


def show_heldout(config: dict[str, Any]) -> None:
    """Score the final global model on the held-out centres with overlays (best, median, worst image)."""
    from fedseg.evaluation.evaluate import EvaluateConfig, evaluate
    from fedseg.federation.sites import parse_site_map

    out = Path(config["out"])
    sites = parse_site_map(config["site-map"])
    centres = tuple(s.centre for s in sites if s.role == "heldout" and s.shard is None and not s.test_split)
    checkpoint = out / "checkpoints" / "last.pt"
    if not centres or not checkpoint.exists():
        return
    folder = out / "heldout"
    data = Path(config["data-root"])
    final = evaluate(EvaluateConfig(checkpoint, data, centres, folder, device="cpu"), progress=False)
    print(f"held-out images with the final model's masks: {folder / 'overlays'} (scores: {folder / 'report.md'})")
    prior = Path(config["init-checkpoint"]) if config.get("init-checkpoint") else None
    if prior is not None and prior.exists():
        start = evaluate(EvaluateConfig(prior, data, centres, folder / "prior", device="cpu"), progress=False)
        for centre in centres:
            before, after = start.metrics["centres"][centre]["dice"], final.metrics["centres"][centre]["dice"]
            print(
                f"held-out {centre}: Dice {before:.3f} with the public prior alone, {after:.3f} after federated "
                f"training ({folder / 'prior'} has the prior's masks)"
            )


def report(out: Path, config: dict[str, Any]) -> int:
    from fedseg.files import read_jsonl

    rounds = read_jsonl(out / "rounds.jsonl") if (out / "rounds.jsonl").exists() else []
    if not rounds:
        print(f"the run wrote no rounds; see {flwr_home() / 'superlink.log'}", file=sys.stderr)
        return 1
    print(f"\n{config['experiment']}: held-out Dice per round ({out})")
    for record in rounds:
        held = ", ".join(
            f"{c} {v['dice']:.4f}" for c, v in record.get("heldout", {}).items() if v.get("dice") is not None
        )
        eps = [m["epsilon"] for m in record.get("train", {}).values() if "epsilon" in m]
        privacy = f"   epsilon {max(eps):.2f}" if eps else ""
        print(f"  round {record['round']:>3}: {held or '-'}{privacy}")
    expected = int(config.get("num-server-rounds", 5))
    if rounds[-1]["round"] < expected:
        print(f"stopped after round {rounds[-1]['round']} of {expected}; see {out / 'summary.md'}")
    return 0


def serve(port: int) -> int:
    write_flower_config(port)
    superlink = start_superlink(port)
    print(
        f"SuperLink (simulation) on 127.0.0.1:{port}; in another shell:\n"
        f"  export FLWR_HOME={flwr_home()} PATH={bin_dir()}:$PATH\n"
        f"  flwr run . {CONNECTION} --stream --run-config simulations/demo.toml "
        "--federation-config num-supernodes=4\nCtrl-C stops it."
    )
    try:
        superlink.wait()
    finally:
        stop(superlink)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="demo, retina-loco, polyp-sites (a simulations/*.toml), or 'superlink'")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a run config key, e.g. --set num-server-rounds=3 (TOML value syntax)",
    )
    parser.add_argument("--fresh", action="store_true", help="delete the experiment's out folder first")
    args = parser.parse_args()
    try:
        with stop_on_signals():
            if args.experiment == "superlink":
                return serve(DEFAULT_PORT)
            if args.fresh:
                shutil.rmtree(experiment_config(args.experiment, args.set)["out"], ignore_errors=True)
            return run_experiment(args.experiment, args.set)
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the SuperLink and Ray were stopped on the way out
        print(
            f"simulations.launch: {str(interrupt) or 'interrupted'}; SuperLink and simulation stopped. The run folder "
            "keeps every finished round: the same command resumes it (run config 'resume = true').",
            file=sys.stderr,
        )
        return exit_code_of(interrupt)


if __name__ == "__main__":
    sys.exit(main())
