"""What benchmarks share: the memory of a process tree."""

from __future__ import annotations

import os
import subprocess
import sys

from simulations.bench.common import process_tree, tree_memory

HOLD_64_MIB = (
    "import sys, time; block = bytearray(64 * 2**20); sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)"
)


def test_tree_memory_counts_the_children_a_process_started() -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLD_64_MIB], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        assert child.pid in process_tree([os.getpid()])
        children = tree_memory([os.getpid()], include_roots=False)
        whole = tree_memory([os.getpid()])
        assert children.processes >= 1 and whole.processes == children.processes + 1
        assert children.rss_kib >= 64 * 1024 and children.pss_kib >= 60 * 1024  # the child's 64 MiB block
        assert whole.rss_kib > children.rss_kib
    finally:
        child.kill()
        child.wait()
