"""``bastion`` on the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .keys import generate_secret_key

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bastion", description="Server actions, secure by default."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="print a new random secret key (for BASTION_SECRET_KEY)")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        sys.stdout.write(generate_secret_key() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
