"""``fedseg keys``: make a CKKS key set; ``fedseg decrypt``: turn an encrypted global model into a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.crypto.checkpoint import decrypt_checkpoint
from fedseg.crypto.keys import FINGERPRINT_FILE, SERVER_FILE, SITE_FILE, HEParameters, generate_keys


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


def run(args: argparse.Namespace) -> int:
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
        f"  {SITE_FILE:<15} secret key (mode 0600): copy to every site, never to the aggregator\n"
        f"  {SERVER_FILE:<15} no keys, parameters only: for the aggregator\n"
        f"  {FINGERPRINT_FILE:<15} compare it across sites and server"
    )
    return 0
