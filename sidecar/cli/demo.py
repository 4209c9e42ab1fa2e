"""`lokal demo`: the local multi-region demo (root, Linux).

The demo is built from the lab (`lab/lokal_lab`), a development tool that is never shipped in lokal's wheel
or image: it needs network namespaces, containerd, docker-registry and skopeo on the host. This module only
parses the arguments and hands over, or says how to get the lab.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_NO_LAB = 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="build a simulated multi-region cluster here and show lokal's rolling pull (root, Linux)",
        description="Build a multi-region lab cluster, roll one image across every node, show where each "
        "layer came from, and tear it all down. Needs the development lab (a source checkout).",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--nodes", type=int, default=5, help="lab nodes, 3..30 [5]")
    parser.add_argument("--image-mb", type=int, default=40, help="image size in MB [40]")
    parser.add_argument("--containerd", metavar="VERSION", default=None,
                        help="the lab's containerd: 1.6 (the system's), 1.7 or 2.1 [LOKAL_CONTAINERD or 1.6]")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from lokal_lab.demo import run as run_demo
    except ImportError:
        print(
            "lokal demo: the lab is not installed. It is a development tool, not part of lokal's image: "
            "from a source checkout run `bash scripts/demo.sh` (or `pip install -e ./lab`).",
            file=sys.stderr,
        )
        return EXIT_NO_LAB
    return run_demo(args)
