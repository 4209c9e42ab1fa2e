"""The `lokal` command: one sub-command per module in this package.

Each sub-command module offers `register(subparsers)`, which adds its parser and sets `run`, a function of
the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sidecar import __version__


def build_parser() -> argparse.ArgumentParser:
    from sidecar.cli.commands import commands

    parser = argparse.ArgumentParser(prog="lokal", description="Topology-aware P2P OCI image mirror.")
    parser.add_argument("--version", action="version", version=f"lokal {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
