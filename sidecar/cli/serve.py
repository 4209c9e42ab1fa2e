"""`lokal serve`: the DaemonSet's main container. Its settings are `sidecar.settings.ServeSettings`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn

from sidecar.settings import ServeSettings, add_arguments


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve this node's images to containerd and to peers",
        description="Serve blobs from the local containerd store, relay from peers, or answer 404 fast.",
    )
    add_arguments(parser, ServeSettings)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sidecar.logs import get_logger, log_event, setup_logging
    from sidecar.serve import CONFIG_ERRORS, StartupError, check_settings, serve
    from sidecar.settings import read

    try:  # every value is checked before the event loop starts
        settings = read(ServeSettings, args)
        check_settings(settings)
    except CONFIG_ERRORS as exc:
        print(f"lokal serve: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_format, settings.log_level)
    try:
        code = serve(settings)
    except (StartupError, *CONFIG_ERRORS) as exc:
        log_event(get_logger("serve"), "configuration_error", logging.ERROR, error=str(exc))
        print(f"lokal serve: {exc}", file=sys.stderr)
        code = 2
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """End the process without waiting for threads lokal does not own: grpc's completion-queue poller can
    block interpreter exit indefinitely after the event loop closed (grpc/grpc#40989), turning a clean
    SIGTERM into a SIGKILL. Everything of ours is stopped and logged by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
