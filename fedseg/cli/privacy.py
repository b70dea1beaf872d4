"""``fedseg privacy``: print a run's privacy ledger."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.privacy.ledger import format_ledger, read_ledger


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("privacy", help="print a run's privacy ledger (epsilon per site and round)")
    parser.add_argument("--run", type=Path, required=True, help="run folder (pooled or federated)")


def run(args: argparse.Namespace) -> int:
    print(format_ledger(read_ledger(args.run)))
    return 0
