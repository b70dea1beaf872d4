from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedseg.files import append_jsonl, read_jsonl
from fedseg.integrity import DamagedFileError


def test_json_lines_carry_checksums_and_a_changed_digit_is_named(tmp_path: Path) -> None:
    path = tmp_path / "privacy.jsonl"
    append_jsonl(path, {"site": "A", "epsilon": 0.53})
    append_jsonl(path, {"site": "A", "epsilon": 0.71})
    assert read_jsonl(path) == [{"site": "A", "epsilon": 0.53}, {"site": "A", "epsilon": 0.71}]
    path.write_text(path.read_text().replace("0.53", "0.33"))
    with pytest.raises(DamagedFileError, match=r"privacy.jsonl, line 1: damaged: the record no longer matches"):
        read_jsonl(path)


def test_a_line_cut_by_a_crash_is_ignored_and_removed_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as handle:
        handle.write('{"sha256": "0123", "st')  # the crash
    assert read_jsonl(path) == [{"step": 1}]
    append_jsonl(path, {"step": 2})
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_lines_written_before_checksums_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "rounds.jsonl"
    path.write_text(json.dumps({"round": 1}) + "\n")
    append_jsonl(path, {"round": 2})
    assert read_jsonl(path) == [{"round": 1}, {"round": 2}]
