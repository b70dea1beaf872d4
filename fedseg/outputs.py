"""Outputs never replace inputs: one guard for every file fedseg writes.

A command names its inputs (files and folders) with ``inputs_protected``; while it runs, every
writer in ``fedseg.files`` refuses to replace one of those files or to write into one of those
folders. Commands that know their output names in advance also call ``check_planned_outputs``
first, so that a collision is refused before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path


class OutputConflict(ValueError):
    """An output that would replace an input, or two outputs that would be the same file."""


_FileId = tuple[int, int]
_PROTECTED_FILES: ContextVar[frozenset[_FileId]] = ContextVar("fedseg_protected_files", default=frozenset())
_PROTECTED_FOLDERS: ContextVar[frozenset[_FileId]] = ContextVar("fedseg_protected_folders", default=frozenset())


def _identity(path: Path) -> _FileId | None:
    """Device and inode: the same file under any name (symbolic or hard links included)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _identities(paths: Iterable[Path | None]) -> frozenset[_FileId]:
    found = (_identity(Path(p)) for p in paths if p is not None)
    return frozenset(i for i in found if i is not None)


@contextmanager
def inputs_protected(*, files: Iterable[Path | None] = (), folders: Iterable[Path | None] = ()) -> Iterator[None]:
    """While inside, fedseg's writers refuse to replace ``files`` or to write into ``folders``."""
    file_token = _PROTECTED_FILES.set(_PROTECTED_FILES.get() | _identities(files))
    folder_token = _PROTECTED_FOLDERS.set(_PROTECTED_FOLDERS.get() | _identities(folders))
    try:
        yield
    finally:
        _PROTECTED_FOLDERS.reset(folder_token)
        _PROTECTED_FILES.reset(file_token)


def refuse_overwriting_input(target: Path) -> None:
    """Raise ``OutputConflict`` if writing ``target`` would replace an input or write into an input folder."""
    if _identity(target) in _PROTECTED_FILES.get():
        raise OutputConflict(
            f"{target}: is an input of this command; fedseg never overwrites an input. "
            "Choose an output folder (--out) that holds none of the inputs."
        )
    if _identity(target.parent) in _PROTECTED_FOLDERS.get():
        raise OutputConflict(
            f"{target.parent}: is an input folder of this command; fedseg writes nothing into it. "
            "Choose another output folder (--out)."
        )


def check_output_folder(out: Path, inputs: Iterable[Path], *, option: str = "--out") -> None:
    """Refuse an output folder that is one of the input folders."""
    out_id = _identity(out)
    for folder in inputs:
        if out_id is not None and out_id == _identity(folder):
            raise OutputConflict(
                f"{option} {out} is the input folder {folder}: its files would be replaced or mixed with "
                f"the outputs. Choose another {option}."
            )


def check_planned_outputs(planned: Sequence[tuple[Path, Path]], *, inputs: Iterable[Path] = ()) -> None:
    """Refuse, before anything is written, (output, source) pairs whose outputs collide or replace an input.

    ``planned`` lists each output file with the input it is made from, so that the message can name
    both sources of a collision.
    """
    by_output: dict[Path, list[Path]] = {}
    for output, source in planned:
        by_output.setdefault(Path(os.path.abspath(output)), []).append(source)
    collisions = {out: sources for out, sources in by_output.items() if len(sources) > 1}
    if collisions:
        pairs = sorted(collisions.items())
        lines = "; ".join(f"{out.name} from {', '.join(s.name for s in sources)}" for out, sources in pairs)
        raise OutputConflict(
            f"{len(collisions)} output file(s) would be written twice, one overwriting the other: {lines}. "
            "Outputs are named by the input's stem: rename or move one of each pair; nothing was written."
        )
    input_ids = _identities(inputs)
    for output in by_output:
        if _identity(output) in input_ids:
            raise OutputConflict(
                f"{output}: is an input; fedseg never overwrites an input. Choose another output folder; "
                "nothing was written."
            )
