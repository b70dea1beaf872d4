"""Atomic file writes: a crash leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from fedseg.integrity import DamagedFileError, checked_json_line, json_line
from fedseg.outputs import refuse_overwriting_input

logger = logging.getLogger(__name__)


def _default_mode() -> int:
    """0o666 less the process umask: what ``open()`` would give a new file (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    ``mode`` sets the file's permission bits before it becomes visible (0o600 for secrets).
    """
    target = Path(path)
    refuse_overwriting_input(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_mode() if mode is None else mode)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(payload: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` made atomic."""
    target = Path(path)
    refuse_overwriting_input(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp_name)
        with open(tmp_name, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp_name, _default_mode())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def read_json_table(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object that fedseg wrote (e.g. a run's config.json); a missing or damaged file names itself."""
    path = Path(path)
    fix = "Restore it from a backup, or choose another output folder."
    try:
        table = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DamagedFileError(f"{path}: missing, although its folder holds a run. {fix}") from None
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise DamagedFileError(f"{path}: damaged ({error}). {fix}") from None
    if not isinstance(table, dict):
        raise DamagedFileError(f"{path}: damaged (not a JSON object). {fix}")
    return table


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one checksummed JSON line and flush it to disk (a crash loses at most the line being written).

    A line cut short by an earlier crash (no final newline, unreadable) is removed first, so that
    it cannot run into the new one.
    """
    target = Path(path)
    refuse_overwriting_input(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+b") as handle:
        _drop_torn_line(handle, target)
        handle.write((json_line(record) + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def _drop_torn_line(handle: Any, path: Path) -> None:
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(max(0, size - 1))
    if handle.read(1) == b"\n":
        return
    handle.seek(0)
    data = handle.read()
    start = data.rfind(b"\n") + 1
    try:
        checked_json_line(data[start:].decode("utf-8"), path, data.count(b"\n") + 1)
        handle.write(b"\n")
    except (DamagedFileError, UnicodeDecodeError):
        logger.warning("%s: removing an incomplete last line (a crash while it was written)", path)
        handle.truncate(start)
    handle.seek(0, os.SEEK_END)


def write_jsonl(path: str | os.PathLike[str], records: list[dict[str, Any]]) -> Path:
    """Replace a JSON-lines file atomically with ``records`` (checksummed like ``append_jsonl``)."""
    return atomic_write_text(path, "".join(json_line(record) + "\n" for record in records))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSON-lines file, checking every line's checksum.

    A last line without its newline that cannot be read was cut short by a crash and is ignored
    (with a warning); any other damaged line raises ``DamagedFileError`` naming the file and line.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        torn = number == len(lines)  # only the last piece can lack its newline
        try:
            records.append(checked_json_line(raw.decode("utf-8"), path, number))
        except (DamagedFileError, UnicodeDecodeError) as error:
            if torn:
                logger.warning("%s: ignoring an incomplete last line (a crash while it was written)", path)
                break
            if isinstance(error, UnicodeDecodeError):
                raise DamagedFileError(f"{path}, line {number}: damaged: not UTF-8 text.") from None
            raise DamagedFileError(f"{error} Restore the file from a backup, or start a new run folder.") from None
    return records
