"""The containers' health checks (fedseg.deploy.health) against real HTTP and HTTPS servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import certifi
import pytest

from fedseg.deploy import health
from fedseg.deploy.credentials import CertificatePaths, make_certificates
from fedseg.deploy.health import main, site_problems


class HealthEndpoint(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass(frozen=True)
class Endpoints:
    certs: CertificatePaths
    supernode_port: int  # plain HTTP, like the SuperNode's local runtime API
    superlink_port: int  # HTTPS with the federation's certificate, like the SuperLink


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    certs = make_certificates(tmp_path_factory.mktemp("certs"), ["localhost", "127.0.0.1"])
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthEndpoint)
    tls = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthEndpoint)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_certificate, certs.server_key)
    tls.socket = context.wrap_socket(tls.socket, server_side=True)
    for server in (plain, tls):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Endpoints(certs, plain.server_address[1], tls.server_address[1])
    for server in (plain, tls):
        server.shutdown()
        server.server_close()


def site_environment(endpoints: Endpoints, **changes: str) -> dict[str, str]:
    environ = {
        "FEDSEG_PORT": str(endpoints.supernode_port),
        "FEDSEG_SUPERLINK": f"localhost:{endpoints.superlink_port}",
        "FEDSEG_CA": str(endpoints.certs.ca_certificate),
    }
    return {**environ, **changes}


def test_a_site_is_healthy_when_its_supernode_and_the_superlink_answer(endpoints: Endpoints) -> None:
    assert site_problems(site_environment(endpoints)) == []


def test_a_site_names_each_problem(endpoints: Endpoints) -> None:
    public_cas = certifi.where()  # any CA but the federation's
    environ = site_environment(endpoints, FEDSEG_PORT=str(closed_port()), FEDSEG_CA=public_cas)
    local, remote = site_problems(environ)
    assert "127.0.0.1" in local and "refused" in local.lower()
    assert "certificate verify failed" in remote  # the SuperLink is not the one this site's CA vouches for
    assert site_problems(site_environment(endpoints, FEDSEG_SUPERLINK="")) == ["FEDSEG_SUPERLINK is not set"]


def test_the_superlink_check_sets_the_exit_status(endpoints: Endpoints, capsys: pytest.CaptureFixture[str]) -> None:
    ca = str(endpoints.certs.ca_certificate)
    down = closed_port()
    assert main(["superlink", "--port", str(endpoints.superlink_port), "--ca", ca]) == 0
    assert main(["superlink", "--port", str(down), "--ca", ca]) == 1
    healthy, unhealthy = capsys.readouterr().out.splitlines()
    assert healthy == "healthy" and unhealthy.startswith(f"unhealthy: https://127.0.0.1:{down}/health: ")


def test_the_images_check_runs_the_file_without_importing_fedseg_or_torch(endpoints: Endpoints) -> None:
    """As the Dockerfiles' HEALTHCHECK runs it: importing the package would import torch (seconds)."""
    ca = str(endpoints.certs.ca_certificate)
    command = [sys.executable, "-I", "-X", "importtime", health.__file__, "superlink", "--ca", ca]
    completed = subprocess.run([*command, "--port", str(endpoints.superlink_port)], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout == "healthy\n", completed.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in completed.stderr.splitlines() if "|" in line}
    assert not imported & {"fedseg", "torch", "numpy"}, sorted(imported)
    down = subprocess.run([*command, "--port", str(closed_port())], capture_output=True, text=True)
    assert down.returncode == 1 and down.stdout.startswith("unhealthy: ")
