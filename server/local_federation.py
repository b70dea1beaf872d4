"""A deployment dry run on one host, without Docker: a SuperLink with TLS and SuperNode
authentication, and one SuperNode per site, as separate processes talking over 127.0.0.1.

    python -m server.local_federation --sites STARE,AV-WIDE,heldout:CHASE_DB1 \\
        --data ../shared/data/retina --work runs/dry-run --set num-server-rounds=2

It makes the credentials (CA and SuperLink certificate, one node key per site, the HE key set),
starts ``flower-superlink --enable-supernode-auth`` with TLS, registers each site's public key
with ``flwr supernode register``, starts each site with ``python -m sites.supernode`` and
submits the app with ``flwr run``. The aggregator only ever sees ``server.context``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from fedseg.crypto.keys import SERVER_FILE, SITE_FILE, generate_keys
from fedseg.crypto.registry import build_registry, write_registry
from fedseg.deploy.credentials import make_certificates, make_node_key
from fedseg.federation.sites import parse_site
from server.superlink import wait_until_listening

REPO = Path(__file__).resolve().parents[1]
CONNECTION = "fedseg-deploy"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalFederation:
    """Processes of a federation on this host; ``close()`` stops them all."""

    def __init__(self, work: Path, *, data: Path, he: bool = True) -> None:
        self.work, self.data, self.he = Path(work), Path(data), he
        self.bin = Path(sys.executable).parent
        self.port = free_port()
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[str, subprocess.Popen] = {}
        self.certs = make_certificates(self.work / "certs", ["127.0.0.1", "localhost"])
        if he:
            generate_keys(self.work / "he")
            (self.work / "aggregator").mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.work / "he" / SERVER_FILE, self.work / "aggregator" / SERVER_FILE)
        self._write_flower_config()

    @property
    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            FLWR_HOME=str(self.work / "flwr-home"),
            PYTHONPATH=str(REPO),
            PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
        )

    def _write_flower_config(self) -> None:
        home = self.work / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        config = {
            "superlink": {
                "default": CONNECTION,
                CONNECTION: {"address": f"127.0.0.1:{self.port}", "root-certificates": str(self.certs.ca_certificate)},
            }
        }
        (home / "config.toml").write_text(tomli_w.dumps(config))

    def _spawn(self, command: list[str], log: str) -> subprocess.Popen:
        handle = open(self.work / log, "ab")  # noqa: SIM115 (lives as long as the process)
        return subprocess.Popen(
            command, cwd=self.work, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_superlink(self) -> None:
        certs = self.certs
        binary = str(self.bin / "flower-superlink")
        self.superlink = self._spawn(
            [
                binary,
                "--ssl-ca-certfile",
                str(certs.ca_certificate),
                "--ssl-certfile",
                str(certs.server_certificate),
                "--ssl-keyfile",
                str(certs.server_key),
                "--enable-supernode-auth",
                "--isolation",
                "subprocess",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            "superlink.log",
        )
        wait_until_listening(self.superlink, self.port, self.work / "superlink.log")

    def node_key(self, name: str) -> tuple[Path, Path]:
        private = self.work / "node-keys" / f"{name}.key"
        return (private, private.with_suffix(".pub")) if private.exists() else make_node_key(private.parent, name)

    @property
    def registry(self) -> Path:
        return self.work / "federation.json"

    def register(self, name: str) -> None:
        """Register the site's key with the SuperLink and in the site registry (``fedseg registry``)."""
        _, public = self.node_key(name)
        write_registry(self.registry, build_registry(sorted((self.work / "node-keys").glob("*.pub"))))
        subprocess.run(
            [str(self.bin / "flwr"), "supernode", "register", str(public), CONNECTION],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )

    def start_site(self, spec: str, *, key_name: str | None = None) -> subprocess.Popen:
        name = key_name or parse_site(spec).name
        private, _ = self.node_key(name)
        command = [
            sys.executable,
            "-m",
            "sites.supernode",
            "--site",
            spec,
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--data",
            str(self.data),
            "--state",
            str(self.work / "state" / name),
            "--ca",
            str(self.certs.ca_certificate),
            "--node-key",
            str(private),
            "--device",
            "cpu",
            "--port",
            str(free_port()),
        ]
        if self.he:
            command += ["--he-keys", str(self.work / "he" / SITE_FILE), "--registry", str(self.registry)]
        self.nodes[name] = self._spawn(command, f"node-{name}.log")
        return self.nodes[name]

    def stop_site(self, name: str, *, sig: int = signal.SIGKILL) -> None:
        process = self.nodes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def run(self, run_config: dict[str, Any], *, timeout: float = 900) -> subprocess.CompletedProcess:
        encrypted = {"he": True, "he-keys": str(self.work / "aggregator"), "registry": str(self.registry)}
        config = {**run_config, **(encrypted if self.he else {})}
        path = self.work / "run-config.toml"
        path.write_text(tomli_w.dumps(config))
        return subprocess.run(
            [str(self.bin / "flwr"), "run", str(REPO), CONNECTION, "--stream", "--run-config", str(path)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        for name in list(self.nodes):
            self.stop_site(name, sig=signal.SIGTERM)
        if self.superlink is not None and self.superlink.poll() is None:
            os.killpg(self.superlink.pid, signal.SIGTERM)
            try:
                self.superlink.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.superlink.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", required=True, help="site specs, e.g. STARE,AV-WIDE,heldout:CHASE_DB1")
    parser.add_argument("--data", type=Path, required=True, help="dataset root shared by the simulated hospitals")
    parser.add_argument("--work", type=Path, default=Path("runs/dry-run"))
    parser.add_argument("--experiment", default=None, help="a simulations/<name>.toml to start from")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-he", action="store_true")
    args = parser.parse_args()
    config: dict[str, Any] = {}
    if args.experiment:
        config = tomllib.loads((REPO / "simulations" / f"{args.experiment}.toml").read_text())
    config.update({"site-map": args.sites, "out": str((args.work / "run").resolve()), "device": "cpu"})
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = tomllib.loads(f"v = {value}")["v"]
    federation = LocalFederation(args.work.resolve(), data=args.data.resolve(), he=not args.no_he)
    try:
        federation.start_superlink()
        for spec in args.sites.split(","):
            federation.register(parse_site(spec).name)
            federation.start_site(spec)
        completed = federation.run(config)
        print(completed.stdout[-5000:])
        return completed.returncode
    finally:
        federation.close()


if __name__ == "__main__":
    sys.exit(main())
