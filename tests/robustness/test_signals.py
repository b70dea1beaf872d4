"""Issue 15, case 11: SIGTERM (what containers and schedulers send) is handled like Ctrl-C in
``fedseg train``, in a site's SuperNode launcher and in the simulation launcher: state saved, child
processes stopped, a message, exit code 128 + 15."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fedseg.cli import main
from fedseg.training.local import LocalState
from fedseg.training.run_folder import load_resume_point
from tests.conftest import REPO
from tests.robustness.conftest import fingerprints, train_args

TERMINATED = 128 + signal.SIGTERM


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for its parent; it runs no more
        return stat.read().split(")")[-1].split()[0] != "Z"


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def test_sigterm_to_fedseg_train_saves_state_and_exits_143_then_resume_continues(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    # A DataLoader worker process too: the whole group gets SIGTERM.
    options = {"steps": "500", "checkpoint_every": "500", "val_every": "0", "workers": "1"}
    args = train_args(dataset, run, **options)
    before = fingerprints(dataset)
    process = subprocess.Popen(
        [sys.executable, "-m", "fedseg", *args],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    wait_for(lambda: (run / "log.jsonl").exists() or process.poll() is not None, 600, "the first training step")
    os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: every process of the job
    stdout, stderr = process.communicate(timeout=300)
    output = stdout + stderr  # log lines go to stdout (through tqdm), the command's last word to stderr
    assert process.returncode == TERMINATED, output
    assert "fedseg train: stopped by SIGTERM" in stderr and "resume.pt" in output and "--resume" in output
    saved_step = LocalState.from_bytes(load_resume_point(run / "checkpoints" / "resume.pt")["local_state"]).step
    assert saved_step >= 1 and fingerprints(dataset) == before
    resumed = train_args(dataset, run, "--resume", **{**options, "steps": str(saved_step + 1)})
    assert main(resumed) == 0
    assert f"trained {saved_step + 1} steps" in capsys.readouterr().out


FAKE_SUPERNODE = """\
#!{python}
# Stands in for flower-supernode: a child process (its ClientApp), both record the SIGTERM they get.
import os, signal, subprocess, sys, time
from pathlib import Path
log = Path(os.environ["FAKE_LOG"])
child = subprocess.Popen([sys.executable, "-c", '''
import os, signal, time
from pathlib import Path
log = Path(os.environ["FAKE_LOG"])
signal.signal(signal.SIGTERM, lambda *_: (log.with_suffix(".clientapp").write_text("SIGTERM"), os._exit(0)))
log.with_suffix(".ready").write_text(str(os.getpid()))
time.sleep(300)
'''])
def stop(*_):
    log.with_suffix(".supernode").write_text("SIGTERM")
    child.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
time.sleep(300)
"""


def test_sigterm_to_a_site_stops_its_supernode_and_clientapp_and_exits_143(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "flower-supernode"
    fake.write_text(FAKE_SUPERNODE.format(python=sys.executable))
    fake.chmod(0o755)
    for name in ("ca.crt", "node.key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "data").mkdir()
    log = tmp_path / "fake.log"
    command = [sys.executable, "-m", "sites.supernode", "--site", "STARE", "--superlink", "127.0.0.1:1"]
    command += ["--data", str(tmp_path / "data"), "--state", str(tmp_path / "state")]
    command += ["--ca", str(tmp_path / "ca.crt"), "--node-key", str(tmp_path / "node.key")]
    process = subprocess.Popen(
        command,
        env=environment(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_LOG=str(log)),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # like a container's first process: it leads its process group
    )
    wait_for(lambda: log.with_suffix(".ready").exists(), 300, "the fake ClientApp")
    clientapp = int(log.with_suffix(".ready").read_text())
    process.send_signal(signal.SIGTERM)  # docker stop: the first process only
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == TERMINATED, stderr
    assert "site STARE stopped by SIGTERM" in stderr and str(tmp_path / "state") in stderr
    assert log.with_suffix(".supernode").read_text() == "SIGTERM"
    assert log.with_suffix(".clientapp").read_text() == "SIGTERM"
    wait_for(lambda: not alive(clientapp), 10, "the ClientApp to exit")


FAKE_SUPERLINK = """\
#!{python}
# Stands in for flower-superlink: listens on --port and starts a long-lived helper, as the simulation's Ray does.
import os, socket, subprocess, sys, time
from pathlib import Path
port = int(sys.argv[sys.argv.index("--port") + 1])
server = socket.socket()
server.bind(("127.0.0.1", port))
server.listen()
ray = subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgrp(); time.sleep(300)"])  # as Ray's driver
Path(os.environ["FAKE_LOG"]).write_text(f"{{os.getpid()}} {{ray.pid}}")
time.sleep(300)
"""
FAKE_FLWR = """\
#!{python}
import time
time.sleep(300)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_to_the_simulation_launcher_stops_its_superlink_and_ray_and_exits_143(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, script in (("flower-superlink", FAKE_SUPERLINK), ("flwr", FAKE_FLWR)):
        (bin_dir / name).write_text(script.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    data, prior = tmp_path / "data", tmp_path / "prior" / "prior.pt"
    data.mkdir()
    (data / "synth.json").write_text("{}")  # the demo's data and prior exist: the launcher goes straight to flwr
    prior.parent.mkdir()
    prior.write_bytes(b"")
    log = tmp_path / "fake.log"
    launcher = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import simulations.launch as launch
        launch.bin_dir = lambda: Path({str(bin_dir)!r})
        sys.argv = ["launch", "demo", "--set", "data-root='{data}'", "--set", "out='{tmp_path / "out"}'",
                    "--set", "init-checkpoint='{prior}'"]
        sys.exit(launch.main())
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", launcher],
        env=environment(
            FAKE_LOG=str(log), FEDSEG_FLWR_HOME=str(tmp_path / "flwr"), FEDSEG_SUPERLINK_PORT=str(free_port())
        ),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(log.exists, 600, "the fake SuperLink")
    time.sleep(1.0)  # let the launcher reach `flwr run`
    superlink, ray = map(int, log.read_text().split())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == TERMINATED, stderr
    assert "stopped by SIGTERM" in stderr and "SuperLink and simulation stopped" in stderr
    wait_for(lambda: not alive(superlink) and not alive(ray), 10, "the SuperLink and its helper to exit")
