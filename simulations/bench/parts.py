"""The results suite in resumable parts of at most ten minutes: the plan, the record, and running a part.

A federated row's part is a range of its rounds (the federation resumes from its run folder: the
server's ``checkpoints/server.pt``, the sites' state under ``sites/``), a pooled row's part a range of
its steps (pooled training resumes from ``checkpoints/resume.pt``), a benchmark is one part. The last
part of a row also scores the final model on the held-out centre and writes the row's JSON. A part
stops at :data:`PART_MINUTES` whatever it reached; it is recorded done only when it reached its last
round or step, so a crash or a stop loses at most the part that was running.

The minutes of the plan are estimates from per-step costs measured on a quiet 2-core machine
(:class:`Costs` names each source); ``progress.json`` records the minutes each part really took.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedseg.files import atomic_write_json

PART_MINUTES = 10.0  # a part stops here, done or not
PLAN_MINUTES = 8.0  # parts are cut so that their estimate fits this (room for a slower machine)
PROGRESS = "progress.json"


@dataclass(frozen=True)
class Costs:
    """Seconds on a quiet 2-core x86-64 machine (no GPU), batch 8, crops of 256, the default U-Net."""

    step: float = 0.9  # a site's step: 30 steps in 25.5-28.0 s (time-to-dice README, 24 x 30 run)
    dp: float = 2.1  # x a step under DP-SGD (dp_overhead, batch 16, crop 256: 2.04x)
    # x a step with Mean Teacher (STARE-held-out row, 2 cores: 2.2 s a site's step, 0.87 without it)
    mean_teacher: float = 2.5
    # x a step with both (CHASE_DB1-held-out DP epsilon 8 row, 2 cores: 150 s a round of 2 x 30 steps)
    dp_mean_teacher: float = 2.7
    round: float = 3.0  # aggregation and messages per round (time-to-dice README: 2-3 s)
    he_round: float = 4.0  # mask, encrypt, sum, decrypt per round (he_overhead quick: +1.8 s at 3 sites)
    start: float = 45.0  # SuperLink, Ray, the sites' first data load: a part's fixed cost
    megapixels_per_second: float = 0.45  # full-resolution scoring (CHASE_DB1, 27 MP: about 60 s)
    validation: float = 10.0  # the training sites' validation images, at every scoring round
    bench: float = 6.0  # minutes of a cost benchmark

    def step_factor(self, *, dp: bool, mean_teacher: bool) -> float:
        """A site's step with DP-SGD and/or Mean Teacher, as a multiple of a plain step. Not a product:
        Mean Teacher's extra forward passes cost less next to DP's per-sample gradients."""
        if dp and mean_teacher:
            return self.dp_mean_teacher
        return self.dp if dp else self.mean_teacher if mean_teacher else 1.0


COSTS = Costs()
HELDOUT_MEGAPIXELS = {"CHASE_DB1": 26.9, "STARE": 8.5, "AV-WIDE": 28.3, "Kvasir-SEG/test": 14.7}


@dataclass(frozen=True)
class Work:
    """What a row costs, in the plan's units: per round (federated), per chunk of steps (pooled)."""

    experiment: str
    unit: str  # "rounds", "steps" or "bench"
    total: int  # rounds or steps of the whole row (1 for a benchmark)
    chunk: int  # steps per unit (pooled: parts end on multiples of it)
    seconds: tuple[float, ...]  # estimated seconds of each unit
    start: float  # fixed seconds of every part (start-up)
    final: float  # seconds of the scoring after the last unit


@dataclass(frozen=True)
class Part:
    name: str
    experiment: str
    unit: str
    first: int
    last: int
    total: int
    minutes: float

    @property
    def final(self) -> bool:
        return self.last == self.total


def cut(work: Work, budget_minutes: float = PLAN_MINUTES) -> list[Part]:
    """``work`` cut into parts whose estimated minutes fit ``budget_minutes`` (at least one unit each)."""
    parts: list[Part] = []
    first, seconds = 0, work.start
    for index, unit_seconds in enumerate(work.seconds):
        last_unit = index == len(work.seconds) - 1
        cost = unit_seconds + (work.final if last_unit else 0.0)
        if index > first and seconds + cost > budget_minutes * 60:
            parts.append(_part(work, first, index, seconds))
            first, seconds = index, work.start
        seconds += cost
    parts.append(_part(work, first, len(work.seconds), seconds))
    return parts


def _part(work: Work, first_unit: int, end_unit: int, seconds: float) -> Part:
    if work.unit == "bench":
        return Part(work.experiment, work.experiment, "bench", 1, 1, 1, seconds / 60)
    first, last = first_unit * work.chunk + 1, min(end_unit * work.chunk, work.total)
    name = f"{work.experiment}@{work.unit}-{first}-{last}"
    return Part(name, work.experiment, work.unit, first, last, work.total, seconds / 60)


# -- the record of parts done ----------------------------------------------------------------------
def read_progress(out: Path) -> dict[str, dict[str, Any]]:
    path = out / PROGRESS
    return json.loads(path.read_text()) if path.exists() else {}


def record(out: Path, part: Part, *, reached: int, seconds: float) -> bool:
    """Add an attempt at ``part`` to ``progress.json``; returns whether the part is now done."""
    progress = read_progress(out)
    entry = progress.get(part.name, {"seconds": 0.0, "attempts": 0})
    done = reached >= part.last
    progress[part.name] = {
        "done": done,
        "reached": reached,
        "total": part.total,
        "seconds": entry["seconds"] + seconds,
        "attempts": entry["attempts"] + 1,
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out / PROGRESS, progress)
    return done


def is_done(out: Path, part: Part) -> bool:
    """Recorded done for a row of the same length (a row whose rounds or steps changed starts again), or its
    row finished (its JSON exists: the row ran whole, outside the parts)."""
    entry = read_progress(out).get(part.name, {})
    same_row = entry.get("total", part.total) == part.total  # records from before "total" was kept: the same
    return (out / f"{part.experiment}.json").exists() or (entry.get("done", False) and same_row)


def row_seconds(out: Path, experiment: str) -> float:
    """Seconds spent on every part of a row so far."""
    progress = read_progress(out)
    return sum(e["seconds"] for name, e in progress.items() if name.split("@")[0] == experiment)


# -- running a federation or pooled training up to a round or step -----------------------------------
@dataclass(frozen=True)
class Stop:
    """Where a part ends: after round (or step) ``last``, or at ``deadline`` (``time.monotonic()``)."""

    last: int
    deadline: float


def saved_round(run: Path) -> int:
    """The round of the server's resume point (``checkpoints/server.pt``, written after the round's log
    lines and checkpoints); 0 before the first. Read again only when the file changed."""
    state = run / "checkpoints" / "server.pt"
    if not state.exists():
        return 0
    key = (str(state), state.stat().st_mtime_ns)
    if key not in _SAVED_ROUNDS:
        import torch

        _SAVED_ROUNDS[key] = int(torch.load(state, map_location="cpu", weights_only=True)["round"])
    return _SAVED_ROUNDS[key]


_SAVED_ROUNDS: dict[tuple[str, int], int] = {}


def simulate_until(config: dict[str, Any], stop: Stop) -> int:
    """Run (or resume) the federation of ``config`` until round ``stop.last`` is saved, the run ends or
    the deadline passes; the simulation is then stopped, and the next call resumes it. A last part
    lets the run end by itself (summary, learning curve). Returns the last saved round. The log of
    ``flwr run`` is appended to ``<out>/flwr-run.log``.

    Before stopping a running federation it writes the run folder's ``STOP`` file, so the server does
    not record the round in progress, whose sites fail only because they are being stopped."""
    from fedseg.federation.run_outputs import STOP_FILE
    from simulations import launch

    out = Path(config["out"])
    if saved_round(out) >= stop.last:
        return saved_round(out)
    until = stop.last if stop.last < int(config["num-server-rounds"]) else math.inf  # the last part: run to the end
    out.mkdir(parents=True, exist_ok=True)
    (out / "run-config.toml").write_text(tomli_w.dumps(config))
    n_sites = len([s for s in config["site-map"].split(",") if s.strip()])
    port = launch.free_port(launch.DEFAULT_PORT)
    launch.write_flower_config(port)
    superlink = launch.start_superlink(port)
    command = [str(launch.bin_dir() / "flwr"), "run", str(launch.REPO), launch.CONNECTION, "--stream"]
    command += ["--run-config", str(out / "run-config.toml"), "--federation-config", f"num-supernodes={n_sites}"]
    process, ended = None, False
    try:
        with (out / "flwr-run.log").open("ab") as log:
            process = subprocess.Popen(command, cwd=launch.REPO, env=launch.flower_env(), stdout=log, stderr=log)
            while process.poll() is None and saved_round(out) < until and time.monotonic() < stop.deadline:
                time.sleep(2.0)
            ended = process.poll() is not None  # the run ended by itself (not stopped from here or by a signal)
    finally:
        if not ended:
            (out / STOP_FILE).touch()  # before anything is stopped: the round in progress is not recorded
        if process is not None and process.poll() is None:
            _terminate(process)
        launch.stop(superlink)
    return saved_round(out)


def _terminate(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def train_until(config: Any, stop: Stop, *, chunk: int) -> int:
    """Run (or resume) pooled training of ``config`` (a ``TrainConfig``) until step ``stop.last`` or the
    deadline, in chunks of ``chunk`` steps; saves the resume point and ``last.pt``. Returns the step."""
    from fedseg.training.pooled import PooledTrainer

    resume = (Path(config.out) / "checkpoints" / "resume.pt").exists()
    pooled = PooledTrainer(config, resume=resume, progress=False)
    try:
        while pooled.step < min(stop.last, config.steps) and time.monotonic() < stop.deadline:
            pooled.trainer.run(min(chunk, stop.last - pooled.step))
        pooled._checkpoint(best=False, last=True)  # PooledTrainer.run() stops only at config.steps
    finally:
        pooled.tracker.close()
    return pooled.step
