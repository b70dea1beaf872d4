"""The ``fedseg`` command line: thin wrappers over library functions."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fedseg import __version__
from fedseg.cli import check, demo, deploy, evaluate, export, keys, models, predict, prior, privacy, synth, train
from fedseg.cli.common import USER_ERRORS, setup_logging
from fedseg.signals import exit_code_of, stop_on_signals

COMMANDS = {
    "check": check,
    "synth": synth,
    "prior": prior,
    "train": train,
    "evaluate": evaluate,
    "predict": predict,
    "export": export,
    "models": models,
    "privacy": privacy,
    "keys": keys,
    "certs": deploy,
    "node-key": deploy,
    "decrypt": keys,
    "registry": keys,
    "demo": demo,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedseg", description="Federated medical image segmentation.")
    parser.add_argument("--version", action="version", version=f"fedseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in dict.fromkeys(COMMANDS.values()):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        with stop_on_signals():
            return int(COMMANDS[args.command].run(args))
    except USER_ERRORS as error:
        print(f"fedseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM through stop_on_signals
        print(f"fedseg {args.command}: {str(interrupt) or 'interrupted'}", file=sys.stderr)
        return exit_code_of(interrupt)
