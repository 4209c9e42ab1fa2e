"""`lokal status`: what the local `lokal serve` knows, from its loopback-only debug endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    from sidecar.debug.client import default_server

    parser = subparsers.add_parser(
        "status",
        help="this node's peers, index, containerd state and recent requests",
        description="Ask the local lokal serve (loopback only) for its state: node, policy, peers by "
        "region and zone, index, containerd, warnings, hit ratio and bytes by tier, last requests.",
    )
    parser.add_argument("--server", default=default_server(), help="lokal's address [%(default)s]")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sidecar.debug.client import DebugClientError, fetch_json
    from sidecar.debug.render import format_status

    try:
        doc = fetch_json(args.server, "status")
    except DebugClientError as exc:
        print(f"lokal status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else format_status(doc))
    return 0
