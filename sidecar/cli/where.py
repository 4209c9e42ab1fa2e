"""`lokal where IMAGE|DIGEST`: which nodes hold each blob, and the order lokal would try them in."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: Any) -> None:
    from sidecar.debug.client import default_server

    parser = subparsers.add_parser(
        "where",
        help="which nodes hold an image's blobs, and the order lokal would try them in",
        description="For each blob of IMAGE (or one DIGEST), the nodes that hold it, the order lokal would "
        "try them in with each one's tier and the policy's reason, and what the policy refuses.",
    )
    parser.add_argument("target", metavar="IMAGE|DIGEST",
                        help="e.g. registry.example/app@sha256:..., docker.io/library/nginx:1.27, sha256:...")
    parser.add_argument("--server", default=default_server(), help="lokal's address [%(default)s]")
    parser.add_argument("--json", action="store_true", help="print the JSON document")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sidecar.debug.client import DebugClientError, fetch_json
    from sidecar.debug.render import format_where

    try:
        doc = fetch_json(args.server, "where", {"ref": args.target})
    except DebugClientError as exc:
        print(f"lokal where: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else format_where(doc))
    return 0
