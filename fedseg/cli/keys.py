"""``fedseg keys``: make a CKKS key set; ``fedseg registry``: the site registry (which key speaks for which
site); ``fedseg decrypt``: turn an encrypted global model into a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.crypto.checkpoint import decrypt_checkpoint
from fedseg.crypto.keys import FINGERPRINT_FILE, SERVER_FILE, SITE_FILE, HEParameters, generate_keys
from fedseg.crypto.registry import build_registry, write_registry


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("keys", help="make the HE key set: site.context (secret) and server.context")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the key files")
    defaults = HEParameters()
    parser.add_argument("--poly-modulus-degree", type=int, default=defaults.poly_modulus_degree)
    parser.add_argument(
        "--coeff-mod-bit-sizes",
        default=",".join(map(str, defaults.coeff_mod_bit_sizes)),
        help="comma-separated prime sizes in bits (default: 56,36)",
    )
    parser.add_argument("--scale-bits", type=int, default=defaults.scale_bits, help="CKKS scale 2^bits (default 36)")
    decrypt = sub.add_parser("decrypt", help="decrypt an encrypted global model (.he) into a checkpoint, at a site")
    decrypt.add_argument("--keys", type=Path, required=True, help="the site's site.context")
    decrypt.add_argument("--model", type=Path, required=True, help="checkpoints/last.he or best.he of a run")
    decrypt.add_argument("--out", type=Path, required=True, help="the plaintext checkpoint to write (.pt)")
    decrypt.set_defaults(command="decrypt")
    registry = sub.add_parser(
        "registry", help="write the site registry: each site's public node key (and example bound) by name"
    )
    registry.add_argument("public_keys", type=Path, nargs="+", help="the sites' <site>.pub from `fedseg node-key`")
    registry.add_argument("--out", type=Path, required=True, help="the registry file to write (e.g. federation.json)")
    registry.add_argument(
        "--max-examples",
        action="append",
        default=[],
        metavar="SITE=N",
        help="the most training images an update of SITE may claim (repeatable; default: what it describes)",
    )
    registry.set_defaults(command="registry")


def _bounds(items: list[str]) -> dict[str, int]:
    bounds = {}
    for item in items:
        site, _, value = item.partition("=")
        if not value.isdigit():
            raise ValueError(f"--max-examples expects SITE=N with a whole number N, got '{item}'")
        bounds[site] = int(value)
    return bounds


def run(args: argparse.Namespace) -> int:
    if args.command == "registry":
        if args.out.exists():
            raise FileExistsError(f"{args.out}: exists already; write the new registry elsewhere and compare")
        registry = build_registry(list(args.public_keys), _bounds(args.max_examples))
        write_registry(args.out, registry)
        print(
            f"site registry {registry.fingerprint} for {', '.join(registry.sites)} in {args.out}: give it to the "
            "aggregator (run config 'registry') and to every site (FEDSEG_REGISTRY)"
        )
        return 0
    if args.command == "decrypt":
        path = decrypt_checkpoint(args.model, args.keys, args.out)
        print(f"wrote {path}")
        return 0
    parameters = HEParameters(
        poly_modulus_degree=args.poly_modulus_degree,
        scale_bits=args.scale_bits,
        coeff_mod_bit_sizes=tuple(int(b) for b in args.coeff_mod_bit_sizes.split(",")),
    )
    fingerprint = generate_keys(args.out, parameters)
    print(
        f"key set {fingerprint} in {args.out}:\n"
        f"  {SITE_FILE:<15} secret key (mode 0600): for every site and the held-out evaluator, never the aggregator\n"
        f"  {SERVER_FILE:<15} no keys, parameters only: for the aggregator\n"
        f"  {FINGERPRINT_FILE:<15} compare it across sites and server"
    )
    return 0
