"""``fedseg check``: read every image and mask of a dataset folder and report problems by file."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.cli.common import csv_list
from fedseg.data.check import HEADER, check_dataset
from fedseg.volumes.check import holds_volumes, print_volume_check


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check", help="check a dataset folder (images or volumes): sizes, spacing, unreadable files, bad masks"
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset root: one folder per centre")
    parser.add_argument("--centres", type=csv_list, default=None, help="default: every centre under --data")


def run(args: argparse.Namespace) -> int:
    if holds_volumes(args.data, args.centres):
        return print_volume_check(args.data, args.centres)
    reports = check_dataset(args.data, args.centres)
    print(HEADER)
    for report in reports:
        print(report.line())
    problems = [(r.centre, p) for r in reports for p in r.problems]
    for centre, problem in problems:
        print(f"  {centre}: {problem}")
    errors = [p for _, p in problems if not p.startswith("warning:")]
    print("no problems found" if not problems else f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    return 1 if errors else 0
