"""Start this hospital's SuperNode: ``python -m sites.supernode`` (the site container's entry point).

Settings come from the environment (or the matching ``--options``)::

    FEDSEG_SITE        site spec, e.g. STARE or heldout:CHASE_DB1          (required)
    FEDSEG_SUPERLINK   the SuperLink's address, host:port                   (required)
    FEDSEG_DATA        the image folder (one sub-folder per centre)          default /data
    FEDSEG_STATE       where the site keeps its private state                default /state
    FEDSEG_CA          the federation's CA certificate (TLS)                 default /certs/ca.crt
    FEDSEG_NODE_KEY    the site's SuperNode private key (node auth)          default /keys/node.key
    FEDSEG_HE_KEYS     the site's site.context (encrypted aggregation)       optional
    FEDSEG_REGISTRY    the federation's site registry (signed, masked updates) optional
    FEDSEG_DEVICE      cpu, cuda or auto                                     default auto
    FEDSEG_PORT        the SuperNode's local runtime port                    default 9094
    FEDSEG_MAX_EVALUATIONS  distinct models the site scores at most          default 100

It checks the files exist, then runs ``flower-supernode``. SIGTERM (``docker stop``) or Ctrl-C stops the
SuperNode and its ClientApp processes cleanly (SIGKILL after 8 s) and exits 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from fedseg.signals import exit_code_of, stop_on_signals

STOP_GRACE_SECONDS = 8.0  # docker stop waits 10 s before its SIGKILL

SETTINGS = {
    "site": ("FEDSEG_SITE", None),
    "superlink": ("FEDSEG_SUPERLINK", None),
    "data": ("FEDSEG_DATA", "/data"),
    "state": ("FEDSEG_STATE", "/state"),
    "ca": ("FEDSEG_CA", "/certs/ca.crt"),
    "node_key": ("FEDSEG_NODE_KEY", "/keys/node.key"),
    "he_keys": ("FEDSEG_HE_KEYS", ""),
    "registry": ("FEDSEG_REGISTRY", ""),
    "device": ("FEDSEG_DEVICE", "auto"),
    "port": ("FEDSEG_PORT", "9094"),
    "max_evaluations": ("FEDSEG_MAX_EVALUATIONS", "100"),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (variable, default) in SETTINGS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}", default=os.environ.get(variable, default), help=f"(env {variable})"
        )
    args = parser.parse_args(argv)
    missing = [SETTINGS[n][0] for n in ("site", "superlink") if not getattr(args, n)]
    if missing:
        parser.error(f"set {', '.join(missing)}")
    return args


def supernode_command(args: argparse.Namespace) -> list[str]:
    for label, path in (("CA certificate", args.ca), ("node key", args.node_key), ("data folder", args.data)):
        if not Path(path).exists():
            raise SystemExit(f"fedseg supernode: {label} not found at {path}")
    for label, path in (("HE key file", args.he_keys), ("site registry", args.registry)):
        if path and not Path(path).is_file():
            raise SystemExit(f"fedseg supernode: {label} not found at {path}")
    if not str(args.max_evaluations).isdigit() or int(args.max_evaluations) < 1:
        raise SystemExit(f"fedseg supernode: FEDSEG_MAX_EVALUATIONS must be an integer >= 1: {args.max_evaluations}")
    node_config = (
        f"site='{args.site}' data-root='{args.data}' state-dir='{args.state}' device='{args.device}' "
        f"node-key='{args.node_key}' max-evaluations={int(args.max_evaluations)}"
    )
    if args.he_keys:
        node_config += f" he-keys='{args.he_keys}'"
    if args.registry:
        node_config += f" registry='{args.registry}'"
    binary = shutil.which("flower-supernode") or str(Path(sys.executable).parent / "flower-supernode")
    return [
        binary,
        "--superlink",
        args.superlink,
        "--root-certificates",
        args.ca,
        "--auth-supernode-private-key",
        args.node_key,
        "--node-config",
        node_config,
        "--isolation",
        "subprocess",
        "--port",
        str(args.port),
    ]


def stop_supernode(process: subprocess.Popen) -> None:
    """SIGTERM to the SuperNode and the SuperExec and ClientApp processes it started (they share our process
    group when we lead it: a container's first process, or a command of its own in a shell), then SIGKILL to
    the SuperNode if it is still there after ``STOP_GRACE_SECONDS``."""
    group = os.getpgid(0)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's SIGTERM is not for us
    try:
        if group == os.getpid():
            os.killpg(group, signal.SIGTERM)
        else:
            process.terminate()
    finally:
        signal.signal(signal.SIGTERM, previous)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_supernode(command: list[str], site: str, state: str) -> int:
    """Run ``command`` (flower-supernode); on SIGTERM or SIGINT stop it and its ClientApp processes and exit
    with a message. A site's state is written atomically after every round it answers, so a stop loses at
    most the round in progress, which the server asks for again when the site rejoins."""
    process = subprocess.Popen(command)
    with stop_on_signals():
        try:
            return process.wait()
        except KeyboardInterrupt as interrupt:  # SIGTERM from the container runtime, or Ctrl-C
            stop_supernode(process)
            print(
                f"fedseg supernode: site {site} {str(interrupt) or 'interrupted'}; SuperNode and ClientApp stopped. "
                f"Its state in {state} holds every round it finished: start it again to rejoin the federation.",
                file=sys.stderr,
                flush=True,
            )
            return exit_code_of(interrupt)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = supernode_command(args)
    Path(args.state).mkdir(parents=True, exist_ok=True)
    return run_supernode(command, args.site, args.state)


if __name__ == "__main__":
    sys.exit(main())
