from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedseg.files import append_jsonl, atomic_write_bytes
from fedseg.outputs import OutputConflict, check_output_folder, check_planned_outputs, inputs_protected


def test_no_writer_replaces_an_input_under_any_name(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    image = images / "a.png"
    image.write_bytes(b"patient")
    os.link(image, tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(image)
    with inputs_protected(files=[image]):
        for name in ("hard.png", "soft.png"):
            with pytest.raises(OutputConflict, match=f"{name}: is an input of this command"):
                atomic_write_bytes(tmp_path / name, b"mask")
        atomic_write_bytes(tmp_path / "other.png", b"mask")
    assert image.read_bytes() == b"patient"
    atomic_write_bytes(tmp_path / "hard.png", b"mask")  # outside the command, the guard is gone
    assert image.read_bytes() == b"patient"  # atomic replace: a new file, the link is broken, not written through


def test_nothing_is_written_into_an_input_folder(tmp_path: Path) -> None:
    with inputs_protected(folders=[tmp_path]):
        with pytest.raises(OutputConflict, match="is an input folder of this command"):
            append_jsonl(tmp_path / "log.jsonl", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_collisions_and_input_folders_are_refused_before_writing(tmp_path: Path) -> None:
    a, b = tmp_path / "dup.png", tmp_path / "dup.jpg"
    with pytest.raises(OutputConflict, match=r"dup.png from dup.png, dup.jpg.*nothing was written"):
        check_planned_outputs([(tmp_path / "out" / "dup.png", a), (tmp_path / "out" / "dup.png", b)])
    with pytest.raises(OutputConflict, match="is the input folder"):
        check_output_folder(tmp_path / "." / "", [tmp_path])
    check_output_folder(tmp_path / "new", [tmp_path])
