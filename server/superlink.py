"""Waiting for a freshly started ``flower-superlink`` to listen (shared by the launchers)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path


def wait_until_listening(process: subprocess.Popen, port: int, log: Path, *, seconds: float = 60.0) -> None:
    """Return once 127.0.0.1:``port`` accepts connections; raise ``RuntimeError`` if the process exits or
    ``seconds`` pass first (the message names ``log``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"flower-superlink exited; see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise RuntimeError(f"flower-superlink did not start within {seconds:g} s; see {log}")
