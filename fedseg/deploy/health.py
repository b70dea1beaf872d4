"""The containers' health checks: ``python -I fedseg/deploy/health.py site`` or ``... superlink``.

The images run this file, not the module (``python -m fedseg.deploy.health``, which works too):
importing the ``fedseg`` package configures the runtime and so imports torch, seconds that a busy
host turns into a failed check. This file therefore imports nothing but the standard library.

``site``: the SuperNode's local runtime API answers (``http://127.0.0.1:$FEDSEG_PORT/health``) and the
SuperLink answers at ``$FEDSEG_SUPERLINK`` over TLS, verified against ``$FEDSEG_CA``: the site is up and
can reach its aggregator. ``superlink``: the SuperLink answers ``https://127.0.0.1:9091/health``
(the certificate chain is verified against ``/certs/ca.crt``; the host name is not, it is this host).

Exit status 0 when healthy; otherwise 1 and one line per problem (``docker inspect`` shows them).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 5.0


def problem_with(url: str, *, ca: Path | None = None, check_hostname: bool = True) -> str | None:
    """``None`` if ``url`` answers 200, else what went wrong (HTTPS ``url``s are verified against ``ca``)."""
    context = None
    if url.startswith("https://"):
        if ca is None or not ca.is_file():
            return f"{url}: CA certificate not found at {ca}"
        context = ssl.create_default_context(cafile=str(ca))
        context.check_hostname = check_hostname
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=context) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url}: {getattr(error, 'reason', error)}"


def site_problems(environ: dict[str, str]) -> list[str]:
    port = environ.get("FEDSEG_PORT", "9094")
    superlink = environ.get("FEDSEG_SUPERLINK", "")
    ca = Path(environ.get("FEDSEG_CA", "/certs/ca.crt"))
    local = problem_with(f"http://127.0.0.1:{port}/health")
    if not superlink:
        return [p for p in (local, "FEDSEG_SUPERLINK is not set") if p]
    remote = problem_with(f"https://{superlink}/health", ca=ca)
    return [p for p in (local, remote) if p]


def superlink_problems(port: int, ca: Path) -> list[str]:
    problem = problem_with(f"https://127.0.0.1:{port}/health", ca=ca, check_hostname=False)
    return [problem] if problem else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("site", "superlink"))
    parser.add_argument("--port", type=int, default=9091, help="the SuperLink's port (role superlink)")
    parser.add_argument("--ca", type=Path, default=Path("/certs/ca.crt"), help="CA certificate (role superlink)")
    args = parser.parse_args(argv)
    problems = site_problems(dict(os.environ)) if args.role == "site" else superlink_problems(args.port, args.ca)
    for problem in problems:
        print(f"unhealthy: {problem}")
    if not problems:
        print("healthy")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
