"""A deployment dry run with containers: a SuperLink container and one container per site, on one host.

    python -m server.container_federation base-image      # debian-local:bookworm, from Debian's packages
    python -m server.container_federation build           # the fedseg-site and fedseg-superlink images
    python -m server.container_federation run --sites STARE,AV-WIDE,heldout:CHASE_DB1 --data ../shared/data/retina

The containers are those a federation deploys: TLS, SuperNode authentication, the hospitals' images
mounted read-only, each container's secrets and state on its own volume, health checks. ``make container-test``
(tests/deployment/test_containers.py) runs on top of this module; ``server.local_federation`` is the
same rehearsal with plain processes.

Where no image registry is reachable, ``base-image`` makes the images' base with ``debootstrap``
(as root) from the Debian mirror apt already uses, and ``docker import``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from fedseg.crypto.keys import SERVER_FILE, SITE_FILE, generate_keys
from fedseg.crypto.registry import build_registry, write_registry
from fedseg.deploy.credentials import CertificatePaths, make_certificates, make_node_key
from fedseg.deploy.health import problem_with
from fedseg.federation.sites import parse_site

REPO = Path(__file__).resolve().parents[1]
SITE_IMAGE, SERVER_IMAGE = "fedseg-site", "fedseg-superlink"
DEBIAN_BASE = "debian-local:bookworm"
CONTAINER_UID = 10001  # the images' non-root user (site, aggregator)
CONNECTION = "fedseg-containers"
SUPERLINK_HOST, SUPERLINK_PORT = "superlink", 9091
ACTIVATED = "SuperNode ID:"  # flower-supernode's log line once the SuperLink accepted its key
REGISTRY_FILE = "federation.json"  # the public site registry, at the aggregator and at every site


class DockerError(RuntimeError):
    """Docker is missing, its daemon is not running, or a docker command failed."""


# --- docker ------------------------------------------------------------------------------------------------
def _client_version(binary: str) -> int:
    completed = subprocess.run([binary, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
    match = re.match(r"(\d+)\.", completed.stdout.strip())
    return int(match.group(1)) if match else 0


def _builds_with_buildkit(binary: str) -> bool:
    """Docker 23+ clients need the buildx plugin for BuildKit; older ones have it built in."""
    if subprocess.run([binary, "buildx", "version"], capture_output=True).returncode == 0:
        return True
    return 0 < _client_version(binary) < 23


@dataclass(frozen=True)
class Docker:
    binary: str

    @classmethod
    def find(cls) -> Docker:
        """The first ``docker`` on PATH that builds with BuildKit; raises ``DockerError`` without a daemon."""
        seen: list[str] = []
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            candidate = Path(folder) / "docker"
            if candidate.is_file() and os.access(candidate, os.X_OK) and str(candidate.resolve()) not in seen:
                seen.append(str(candidate.resolve()))
        if not seen:
            raise DockerError("docker not found: install it (Debian: apt-get install -y docker.io) and start dockerd")
        binary = next((b for b in seen if _builds_with_buildkit(b)), None)
        if binary is None:
            raise DockerError(f"none of {', '.join(seen)} builds with BuildKit: install the buildx plugin")
        if subprocess.run([binary, "info"], capture_output=True).returncode != 0:
            raise DockerError("no Docker daemon answers: start it (as root: `dockerd &`; CI: .ci/docker-up)")
        return cls(binary)

    def __call__(self, *args: str, check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess:
        completed = subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, DOCKER_BUILDKIT="1"),
        )
        if check and completed.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:3])} ...: {completed.stderr.strip()[-3000:]}")
        return completed

    def has_image(self, tag: str) -> bool:
        return self("image", "inspect", tag, check=False).returncode == 0

    def image_bytes(self, tag: str) -> int:
        return int(self("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())


# --- images ------------------------------------------------------------------------------------------------
def debian_mirror(suite: str = "bookworm", apt: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt uses for ``suite`` (deb822 .sources files or sources.list), else deb.debian.org."""
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#")
            if suite in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0]
    sources = apt / "sources.list"
    for line in sources.read_text().splitlines() if sources.exists() else []:
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "deb" and parts[2] == suite and "main" in parts[3:]:
            return parts[1]
    return "http://deb.debian.org/debian"


def ensure_base_image(docker: Docker, tag: str = DEBIAN_BASE, *, suite: str = "bookworm") -> bool:
    """Make ``tag`` (Debian ``suite`` with python3 and its venv module) unless it exists; True if made."""
    if docker.has_image(tag):
        return False
    debootstrap = shutil.which("debootstrap", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if debootstrap is None or os.geteuid() != 0:
        raise DockerError(
            f"base image {tag} is missing and cannot be made here: it needs root and debootstrap "
            "(apt-get install -y debootstrap); or build on a public base with --base-image python:3.11-slim"
        )
    with tempfile.TemporaryDirectory(prefix="fedseg-rootfs-", dir="/var/tmp") as scratch:
        rootfs = Path(scratch) / "rootfs"
        completed = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3-venv", suite, str(rootfs), debian_mirror(suite)],
            capture_output=True,
            text=True,
        )
        if completed.returncode != 0:
            raise DockerError(f"debootstrap failed: {completed.stdout[-2000:]}{completed.stderr[-2000:]}")
        strip_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([docker.binary, "import", "-", tag], stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerError(f"docker import {tag} failed: {imported.stderr[-2000:]}")
    return True


def strip_rootfs(rootfs: Path) -> None:
    """Leave out what a base image never needs: downloaded packages, package lists, documentation."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        for entry in (rootfs / folder).glob("*"):
            if entry.is_symlink() or entry.is_file():  # Debian links some doc folders to others
                entry.unlink()
            elif entry.is_dir() and entry.name != "partial":
                shutil.rmtree(entry)


def ca_bundle() -> Path | None:
    """The CA bundle pip on this host trusts (PIP_CERT, SSL_CERT_FILE, Debian's), for builds behind a TLS proxy."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def build_image(
    docker: Docker, dockerfile: str, tag: str, *, base_image: str, ca: Path | None = None, torch_index: str = ""
) -> float:
    """``docker build`` one of the repository's Dockerfiles (package index reached over the host network)."""
    command = ["build", "--progress", "plain", "--network", "host", "-f", str(REPO / dockerfile), "-t", tag]
    command += ["--build-arg", f"BASE_IMAGE={base_image}", "--build-arg", f"TORCH_INDEX={torch_index}"]
    if ca is not None:
        command += ["--secret", f"id=pip-ca,src={ca}"]
    started = time.perf_counter()
    docker(*command, str(REPO), timeout=3600)
    return time.perf_counter() - started


# --- credentials: the one place that makes the federation's keys --------------------------------------------
@dataclass(frozen=True)
class Credentials:
    """Who holds which file: the SuperLink (TLS), the aggregator (HE parameters and the site registry)
    and each site (its own node key; with HE the site context and the registry, to sign and mask)."""

    certs: CertificatePaths
    node_keys: Mapping[str, tuple[Path, Path]]  # site name -> (private key, public key to register)
    site_context: Path | None
    server_context: Path | None
    registry: Path | None = None  # public: the sites' node public keys (`fedseg registry`)

    def superlink_files(self) -> dict[str, Path]:
        return {
            "ca.crt": self.certs.ca_certificate,
            "server.pem": self.certs.server_certificate,
            "server.key": self.certs.server_key,
        }

    def aggregator_files(self) -> dict[str, Path]:
        return {**self._optional(SERVER_FILE, self.server_context), **self._optional(REGISTRY_FILE, self.registry)}

    def site_files(self, name: str) -> dict[str, Path]:
        files = {"ca.crt": self.certs.ca_certificate, "node.key": self.node_keys[name][0]}
        return {**files, **self._optional(SITE_FILE, self.site_context), **self._optional(REGISTRY_FILE, self.registry)}

    @staticmethod
    def _optional(name: str, path: Path | None) -> dict[str, Path]:
        return {name: path} if path is not None else {}


def make_credentials(work: Path, names: Sequence[str], *, he: bool, hosts: Sequence[str]) -> Credentials:
    """The key ceremony of the dry run: TLS certificates, one node key per site; with HE the CKKS key set
    and the site registry of the node public keys (updates signed and masked, as in a deployment)."""
    certs = make_certificates(work / "certs", list(hosts))
    node_keys = {name: make_node_key(work / "node-keys", name) for name in names}
    if not he:
        return Credentials(certs, node_keys, None, None)
    generate_keys(work / "he")
    registry = write_registry(work / REGISTRY_FILE, build_registry([public for _, public in node_keys.values()]))
    return Credentials(certs, node_keys, work / "he" / SITE_FILE, work / "he" / SERVER_FILE, registry)


# --- the federation -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stop:
    seconds: float
    exit_code: int


class ContainerFederation:
    """A SuperLink and site containers on a private network; ``close()`` removes containers, network and volumes."""

    def __init__(
        self,
        work: Path,
        *,
        data: Path,
        names: Sequence[str],
        docker: Docker,
        he: bool = True,
        prefix: str = "fedseg-dry-run",
        site_image: str = SITE_IMAGE,
        server_image: str = SERVER_IMAGE,
    ) -> None:
        self.work, self.data, self.docker, self.he, self.prefix = Path(work), Path(data).resolve(), docker, he, prefix
        self.site_image, self.server_image = site_image, server_image
        self.bin = Path(sys.executable).parent
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.work.mkdir(parents=True, exist_ok=True)
        self.credentials = make_credentials(self.work, names, he=he, hosts=[SUPERLINK_HOST, "127.0.0.1", "localhost"])
        self.network = f"{prefix}-net"
        docker("network", "create", self.network)
        self.address = ""

    # -- volumes and containers --
    def _volume(self, name: str, files: Mapping[str, Path] | None = None) -> str:
        """A named volume owned by the images' user, holding copies of ``files`` (mode 0600) if given."""
        volume = f"{self.prefix}-{name}"
        self.docker("volume", "create", volume)
        self.volumes.append(volume)
        if files:
            mounts = [
                item for target, source in files.items() for item in ("-v", f"{source.resolve()}:/src/{target}:ro")
            ]
            script = f"cp /src/* /dst/ && chown -R {CONTAINER_UID}:{CONTAINER_UID} /dst && chmod -R u=rwX,go= /dst"
            self.docker(
                "run",
                "--rm",
                "--user",
                "0",
                "--entrypoint",
                "sh",
                *mounts,
                "-v",
                f"{volume}:/dst",
                self.site_image,
                "-c",
                script,
            )
        return volume

    def container(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _run(self, name: str, options: list[str], image: str) -> float:
        """``docker run -d`` a container; returns the wall-clock time it was started at."""
        started = time.time()
        self.docker(
            "run",
            "-d",
            "--init",
            "--name",
            self.container(name),
            "--network",
            self.network,
            "--stop-timeout",
            "30",
            *options,
            image,
        )
        self.containers.append(self.container(name))
        return started

    def logs(self, name: str) -> str:
        completed = self.docker("logs", self.container(name), check=False)
        return completed.stdout + completed.stderr

    # -- the SuperLink --
    def start_superlink(self, *, seconds: float = 120) -> None:
        certs = self._volume("superlink-certs", self.credentials.superlink_files())
        aggregator = self._volume("aggregator", self.credentials.aggregator_files())
        options = [
            "--network-alias",
            SUPERLINK_HOST,
            "-p",
            f"127.0.0.1::{SUPERLINK_PORT}",
            "-v",
            f"{certs}:/certs:ro",
            "-v",
            f"{aggregator}:/aggregator:ro",
            "-v",
            f"{self._volume('superlink-state')}:/state",
            "-v",
            f"{self._volume('runs')}:/runs",
        ]
        self._run("superlink", options, self.server_image)
        port = self.docker("port", self.container("superlink"), f"{SUPERLINK_PORT}/tcp").stdout.split()[0]
        self.address = port.replace("0.0.0.0", "127.0.0.1")
        self._write_flower_config()
        deadline = time.monotonic() + seconds
        while problem_with(f"https://{self.address}/health", ca=self.credentials.certs.ca_certificate):
            if time.monotonic() > deadline or "exited" in self.state("superlink"):
                raise DockerError(f"the SuperLink container did not come up:\n{self.logs('superlink')[-3000:]}")
            time.sleep(0.5)

    def _write_flower_config(self) -> None:
        home = self.work / "flwr-home"
        home.mkdir(parents=True, exist_ok=True)
        connection = {"address": self.address, "root-certificates": str(self.credentials.certs.ca_certificate)}
        (home / "config.toml").write_text(tomli_w.dumps({"superlink": {"default": CONNECTION, CONNECTION: connection}}))

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, FLWR_HOME=str(self.work / "flwr-home"))

    def register(self, name: str) -> None:
        _, public = self.credentials.node_keys[name]
        subprocess.run(
            [str(self.bin / "flwr"), "supernode", "register", str(public), CONNECTION],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )

    # -- sites --
    def start_site(self, spec: str) -> float:
        """``docker run`` a site; returns the wall-clock time of the ``docker run``."""
        name = parse_site(spec).name
        keys = self._volume(f"{name}-keys", self.credentials.site_files(name))
        environment = {
            "FEDSEG_SITE": spec,
            "FEDSEG_SUPERLINK": f"{SUPERLINK_HOST}:{SUPERLINK_PORT}",
            "FEDSEG_CA": "/keys/ca.crt",
            "FEDSEG_NODE_KEY": "/keys/node.key",
            "FEDSEG_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
        }
        if self.he:
            environment.update(FEDSEG_HE_KEYS=f"/keys/{SITE_FILE}", FEDSEG_REGISTRY=f"/keys/{REGISTRY_FILE}")
        options = ["--restart", "unless-stopped"]  # as at a hospital: a crashed site comes back by itself
        options += [item for key, value in environment.items() for item in ("-e", f"{key}={value}")]
        options += [
            "-v",
            f"{self.data}:/data:ro",
            "-v",
            f"{keys}:/keys:ro",
            "-v",
            f"{self._volume(f'{name}-state')}:/state",
        ]
        return self._run(name, options, self.site_image)

    def wait_for_log(self, name: str, text: str, *, after: int = 0, seconds: float = 300) -> float:
        """Wall-clock time once ``text`` is in the container's log past character ``after``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if text in self.logs(name)[after:]:
                return time.time()
            if "exited" in self.state(name) and "unless-stopped" not in self.restart_policy(name):
                break
            time.sleep(0.25)
        raise DockerError(f"{self.container(name)}: no {text!r} in its log:\n{self.logs(name)[-3000:]}")

    def timed_log(self, name: str) -> list[tuple[float, str]]:
        """The container's log lines (stdout and stderr) with their times (seconds since the epoch), in order."""
        completed = self.docker("logs", "--timestamps", self.container(name), check=False)
        lines = []
        for line in (completed.stdout + completed.stderr).splitlines():
            stamp, _, text = line.partition(" ")
            with contextlib.suppress(ValueError):
                lines.append((datetime.fromisoformat(stamp[:26]).replace(tzinfo=timezone.utc).timestamp(), text))
        return sorted(lines, key=lambda item: item[0])

    def health(self, name: str) -> str:
        return self.docker("inspect", "--format", "{{.State.Health.Status}}", self.container(name)).stdout.strip()

    def state(self, name: str) -> str:
        return self.docker("inspect", "--format", "{{.State.Status}}", self.container(name), check=False).stdout

    def restart_policy(self, name: str) -> str:
        return self.docker("inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", self.container(name)).stdout

    def crash(self, name: str) -> float:
        """Kill every process of the container at once (a power cut, not ``docker kill``, which Docker
        counts as a deliberate stop): its restart policy brings it back. Returns the time of the crash."""
        crashed = time.time()
        self.docker("exec", "--user", "0", self.container(name), "sh", "-c", "kill -KILL -1")
        return crashed

    def stop(self, name: str) -> Stop:
        started = time.perf_counter()
        self.docker("stop", self.container(name), timeout=120)
        exit_code = self.docker("inspect", "--format", "{{.State.ExitCode}}", self.container(name)).stdout
        return Stop(time.perf_counter() - started, int(exit_code))

    # -- runs --
    def run(self, run_config: Mapping[str, Any], *, timeout: float = 1200) -> subprocess.CompletedProcess:
        """``flwr run`` the repository's app; the run writes under ``/runs`` in the SuperLink container."""
        encrypted = {"he": True, "he-keys": "/aggregator", "registry": f"/aggregator/{REGISTRY_FILE}"}
        config = {**run_config, **(encrypted if self.he else {})}
        path = self.work / f"run-config-{time.time_ns()}.toml"
        path.write_text(tomli_w.dumps(config))
        return subprocess.run(
            [str(self.bin / "flwr"), "run", str(REPO), CONNECTION, "--stream", "--run-config", str(path)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fetch(self, path: str) -> Path:
        """Copy a file or folder from the SuperLink container (e.g. a run's ``out``) into the work folder."""
        target = self.work / "fetched" / path.strip("/").replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.docker("cp", f"{self.container('superlink')}:{path}", str(target))
        return target

    def close(self) -> None:
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for container in reversed(self.containers):
            name = container.removeprefix(f"{self.prefix}-")
            (logs / f"{name}.log").write_text(self.logs(name))
            self.docker("rm", "-f", container, check=False)
        self.containers.clear()
        for volume in self.volumes:
            self.docker("volume", "rm", "-f", volume, check=False)
        self.volumes.clear()
        self.docker("network", "rm", self.network, check=False)


# --- command line ---------------------------------------------------------------------------------------------
def build_all(docker: Docker, base_image: str, torch_index: str = "") -> dict[str, float]:
    """Build the site and SuperLink images (they share the environment layer); seconds per image."""
    seconds = {}
    for dockerfile, tag in (("sites/Dockerfile", SITE_IMAGE), ("server/Dockerfile", SERVER_IMAGE)):
        seconds[tag] = build_image(
            docker, dockerfile, tag, base_image=base_image, ca=ca_bundle(), torch_index=torch_index
        )
    return seconds


def dry_run(args: argparse.Namespace, docker: Docker) -> int:
    config: dict[str, Any] = {}
    if args.experiment:
        config = tomllib.loads((REPO / "simulations" / f"{args.experiment}.toml").read_text())
    config.update({"site-map": args.sites, "out": "/runs/dry-run", "device": "cpu"})
    for item in args.set:
        key, _, value = item.partition("=")
        config[key] = tomllib.loads(f"v = {value}")["v"]
    specs = args.sites.split(",")
    names = [parse_site(spec).name for spec in specs]
    federation = ContainerFederation(args.work.resolve(), data=args.data, names=names, docker=docker, he=not args.no_he)
    try:
        federation.start_superlink()
        for spec, name in zip(specs, names):
            federation.register(name)
            federation.start_site(spec)
        completed = federation.run(config)
        print(completed.stdout[-5000:])
        print(f"run folder copied to {federation.fetch('/runs/dry-run')}")
        return completed.returncode
    finally:
        federation.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("base-image", help=f"make {DEBIAN_BASE} with debootstrap (root)")
    build = commands.add_parser("build", help=f"build {SITE_IMAGE} and {SERVER_IMAGE}")
    build.add_argument("--base-image", default=DEBIAN_BASE, help="python:3.11-slim where a registry is reachable")
    build.add_argument("--torch-index", default="", help="e.g. https://download.pytorch.org/whl/cpu")
    run = commands.add_parser("run", help="a SuperLink and site containers; two encrypted rounds by default")
    run.add_argument("--sites", required=True, help="site specs, e.g. STARE,AV-WIDE,heldout:CHASE_DB1")
    run.add_argument("--data", type=Path, required=True, help="dataset root shared by the simulated hospitals")
    run.add_argument("--work", type=Path, default=Path("runs/container-dry-run"))
    run.add_argument("--experiment", default=None, help="a simulations/<name>.toml to start from")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--no-he", action="store_true")
    args = parser.parse_args(argv)
    try:
        docker = Docker.find()
        if args.command == "base-image":
            print(f"{DEBIAN_BASE}: {'made' if ensure_base_image(docker) else 'exists already'}")
            return 0
        if args.command == "build":
            if args.base_image == DEBIAN_BASE:
                ensure_base_image(docker)
            for tag, seconds in build_all(docker, args.base_image, args.torch_index).items():
                print(f"{tag}: built in {seconds:.0f} s, {docker.image_bytes(tag) / 1e9:.2f} GB")
            return 0
        return dry_run(args, docker)
    except DockerError as error:
        print(f"fedseg containers: {error}", file=sys.stderr)
        return 1
    except FileExistsError as error:
        print(f"fedseg containers: {error}; remove the work folder or pass another --work", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
