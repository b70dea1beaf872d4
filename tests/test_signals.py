from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fedseg.signals import Interrupted, exit_code_of, signals_deferred, stop_on_signals
from tests.conftest import REPO


def test_sigterm_is_raised_like_ctrl_c_once_and_later_signals_wait_for_the_save() -> None:
    saved, before = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stopped:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):
                    pass
                pytest.fail("SIGTERM did not stop the block")
            except KeyboardInterrupt:
                os.kill(os.getpid(), signal.SIGINT)  # impatient: a second signal while state is saved
                saved.append("state")
                raise
    assert saved == ["state"] and isinstance(stopped.value, KeyboardInterrupt)
    assert stopped.value.name == "SIGTERM" and exit_code_of(stopped.value) == 143
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) == before


def test_signals_wait_until_a_commit_is_written() -> None:
    written = []
    with pytest.raises(Interrupted):
        with stop_on_signals():
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append("reply")
                written.append("state")
            written.append("never")
    assert written == ["reply", "state"]


A_JOB_WITH_A_DATA_LOADING_WORKER = """
import multiprocessing, os, subprocess, sys
import torch
from fedseg.data.sampling import UniformKeys, step_loader
from fedseg.signals import exit_code_of, stop_on_signals

class Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, key):
        return {"index": torch.tensor(key[0])}

batches = iter(step_loader(Numbers(), UniformKeys([0, 1, 2, 3], 2, seed=0), start=0, stop=10**6, workers=1))
next(batches)
(worker,) = multiprocessing.active_children()
try:
    with stop_on_signals():
        # The job's SIGTERM from outside, as a scheduler sends it: to each of its processes.
        subprocess.run(["kill", "-s", "TERM", "--", f"-{os.getpgrp()}"])
        while True:
            next(batches)
except KeyboardInterrupt as stop:
    worker.join(timeout=2.0)
    print("worker exit code after the job's SIGTERM:", worker.exitcode)
    sys.exit(exit_code_of(stop))
"""


def test_a_jobs_sigterm_stops_the_main_process_which_stops_its_data_loading_workers() -> None:
    """PyTorch's workers died at once on a job's SIGTERM, maybe holding a lock that the main process needs to
    shut the loader down: ``fedseg train`` then hung after saving (1 in many runs). They no longer get it."""
    job = subprocess.run(
        [sys.executable, "-c", A_JOB_WITH_A_DATA_LOADING_WORKER],
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # its own process group, as a job has
    )
    assert job.returncode == 128 + signal.SIGTERM, job.stderr
    assert "worker exit code after the job's SIGTERM: None" in job.stdout, job.stdout + job.stderr
