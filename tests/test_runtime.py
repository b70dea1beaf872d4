"""The CPU settings every fedseg process applies at import (fedseg.runtime)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fedseg.runtime import cgroup_cpu_limit, cpu_budget

# Allocate and free a 64 MiB tensor 30 times; count the minor page faults of the last 20.
PROBE = """
import json, resource, sys
import fedseg, torch
from fedseg.runtime import status
torch.empty(1).fill_(0)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    x = torch.empty(16 * 2**20); x.fill_(1.0); del x
before = faults()
for _ in range(20):
    x = torch.empty(16 * 2**20); x.fill_(1.0); del x
print(json.dumps({"faults": faults() - before, "allocator": status().allocator,
                  "threads": torch.get_num_threads(), "budget": status().cpu_budget}))
"""
PAGES_PER_BUFFER = 64 * 2**20 // 4096


def probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "OMP_NUM_THREADS", "FEDSEG_TUNING")}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_fresh_fedseg_process_keeps_freed_buffers_and_uses_its_cpus() -> None:
    tuned = probe()
    assert tuned["allocator"].startswith("glibc")
    assert tuned["threads"] == tuned["budget"] == cpu_budget()
    assert tuned["faults"] < PAGES_PER_BUFFER  # the buffer is reused, not faulted in 20 times


def test_without_the_settings_every_large_buffer_is_faulted_in_again() -> None:
    untuned = probe(FEDSEG_TUNING="0")
    assert untuned["allocator"].startswith("untouched")
    assert untuned["faults"] > 10 * PAGES_PER_BUFFER  # what the settings prevent


def test_an_explicit_thread_count_is_respected() -> None:
    assert probe(OMP_NUM_THREADS="1")["threads"] == 1


def test_cgroup_quota_caps_the_cpu_budget(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path) == 0.5
    assert cgroup_cpu_limit(tmp_path / "missing") is None
