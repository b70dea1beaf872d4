"""Helpers shared by the CLI commands."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from tqdm.auto import tqdm

from fedseg.configuration import ConfigError
from fedseg.crypto.keys import HEKeyError
from fedseg.data.errors import DataError
from fedseg.integrity import DamagedFileError
from fedseg.models.checkpoint import CheckpointError
from fedseg.outputs import OutputConflict

USER_ERRORS = (
    DataError,
    ConfigError,
    CheckpointError,
    HEKeyError,
    DamagedFileError,
    OutputConflict,
    ValueError,
    FileNotFoundError,
    FileExistsError,
)


class TqdmHandler(logging.Handler):
    """Log lines that do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record))


def setup_logging(level: int) -> None:
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def csv_list(text: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. STARE,AV-WIDE")
    return items


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as JSON when it can be (numbers, lists, true/false)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")


def report_failures(failures: list[str]) -> int:
    """Print the files that could not be read (skipped, never silently) and return the exit code."""
    if not failures:
        return 0
    print(f"{len(failures)} image(s) could not be read and were skipped:")
    for failure in failures:
        print(f"  {failure}")
    return 1
