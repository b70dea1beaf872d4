"""``fedseg certs`` (CA and SuperLink certificate) and ``fedseg node-key`` (a site's SuperNode key pair)."""

from __future__ import annotations

import argparse
from pathlib import Path

from fedseg.deploy.credentials import make_certificates, make_node_key


def add_parser(sub: argparse._SubParsersAction) -> None:
    certs = sub.add_parser("certs", help="make a CA and the SuperLink's TLS certificate")
    certs.add_argument("--out", type=Path, required=True)
    certs.add_argument(
        "--host",
        action="append",
        required=True,
        help="a name or IP address sites use to reach the SuperLink (repeatable)",
    )
    certs.set_defaults(command="certs")
    node = sub.add_parser("node-key", help="make a site's SuperNode authentication key pair")
    node.add_argument("--out", type=Path, required=True)
    node.add_argument("--site", required=True, help="the site's name (file names <site>.key / <site>.pub)")
    node.set_defaults(command="node-key")


def run(args: argparse.Namespace) -> int:
    if args.command == "certs":
        paths = make_certificates(args.out, args.host)
        print(
            f"CA: {paths.ca_certificate} (give to every site and to the flwr CLI)\n"
            f"SuperLink: {paths.server_certificate}, {paths.server_key} (keep at the SuperLink)\n"
            f"keep {paths.ca_key} offline: it signs new certificates"
        )
        return 0
    private, public = make_node_key(args.out, args.site)
    print(f"site key: {private} (stays at the site)\nregister at the SuperLink: flwr supernode register {public}")
    return 0
