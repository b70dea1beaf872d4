"""One policy for the signals that stop a process: SIGTERM is handled like Ctrl-C (SIGINT).

Containers, schedulers and ``kill`` send SIGTERM; by default Python dies at once on it, without
saving anything. Inside ``stop_on_signals()`` the first SIGINT or SIGTERM raises ``Interrupted``
(a ``KeyboardInterrupt``), so the code that saves state on Ctrl-C runs on SIGTERM too; later
signals are reported and ignored while that state is being saved (SIGKILL still stops at once).
``signals_deferred`` holds signals back around a short commit; ``stop_process_group`` stops a child
and everything it started the same way (SIGTERM, then SIGKILL after a grace period);
``leave_process_group`` keeps a job's signals away from its data-loading workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by a signal; ``exit_code`` is the shell's 128 + signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + N for a signal handled by ``stop_on_signals``."""
    return interrupt.exit_code if isinstance(interrupt, Interrupted) else 128 + signal.SIGINT


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into ``Interrupted``; ignore (and report) the ones after it.

    Only the main thread can set signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            name = signal.Signals(signum).name
            logger.warning("%s received while stopping: saving first (SIGKILL stops without saving)", name)
            return
        stopping = True
        # A job's SIGTERM reaches its data-loading workers too. Their exit must not interrupt the saving
        # of state: PyTorch's SIGCHLD handler would raise "DataLoader worker exited unexpectedly" there.
        if callable(signal.getsignal(signal.SIGCHLD)):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    previous[signal.SIGCHLD] = signal.getsignal(signal.SIGCHLD)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a few related files are written, then deliver them.

    For short critical sections only (a commit of two files that must agree): a signal received
    inside is re-raised with the handler that was in place, after the block ends.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: received.append(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


def leave_process_group(_worker_id: int = 0) -> None:
    """A DataLoader's ``worker_init_fn``: the worker leaves the job's process group, so that a signal to the
    job (``kill`` of its process group, a terminal's Ctrl-C) reaches the main process only.

    PyTorch makes a worker die at once on such a SIGTERM, maybe holding the lock of the ``done_event`` it
    shares with the main process, which then waits forever for that lock when it shuts the loader down
    after saving its state. The main process stops its workers itself (PyTorch's shutdown, or the SIGTERM
    of ``terminate()`` at exit); a worker whose parent is gone exits by itself.
    """
    os.setpgid(0, 0)


def stop_process_group(process: subprocess.Popen, *, grace: float) -> None:
    """Stop ``process``, its process group (it must lead one: ``start_new_session=True``) and every process
    it started that made a group of its own (Ray's driver does): SIGTERM, so that each saves and exits,
    then SIGKILL for what is left after ``grace`` seconds."""
    family = _descendants(process.pid)
    for sig, patience in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + patience
        while _running(process.pid, family) and time.monotonic() < deadline:
            process.poll()  # reap the leader, so that it does not count as running
            time.sleep(0.2)
        if not _running(process.pid, family):
            break
    process.poll()


def _processes() -> dict[int, tuple[str, int, int]]:
    """Every process: state, parent and process group (Linux ``/proc``; empty elsewhere)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, parent, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            table[int(stat.parent.name)] = (state, int(parent), int(group))
    return table


def _descendants(pid: int) -> set[int]:
    table = _processes()
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (_, ppid, _) in table.items() if ppid == parent and p not in found]
        found.update(children)
        frontier += children
    return found


def _running(group: int, pids: set[int]) -> bool:
    """Whether a process of ``group`` or of ``pids`` still runs (zombies, waiting to be reaped, do not)."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    return any(state != "Z" and (grp == group or pid in pids) for pid, (state, _, grp) in _processes().items())
