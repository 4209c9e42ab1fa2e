"""`lokal serve`: the DaemonSet's main container."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sidecar.settings import SERVE_OPTIONS, add_options, resolve


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve this node's images to containerd and to peers",
        description="Serve blobs from the local containerd store, relay from peers, or answer 404 fast.",
    )
    add_options(parser, SERVE_OPTIONS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import anyio

    from sidecar.containerd import ConfigError, check_socket_setting
    from sidecar.hosts.settings import SettingError
    from sidecar.logs import get_logger, log_event, setup_logging
    from sidecar.serve import build_node, run_node

    try:
        settings = resolve(args)
        check_socket_setting(settings["containerd_socket"])
    except (SettingError, ConfigError) as exc:
        print(f"lokal serve: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings["log_format"], settings["log_level"])

    async def main() -> None:
        # Built inside the event loop: grpc.aio channels belong to the loop they are made in.
        await run_node(build_node(settings))

    try:
        anyio.run(main)
    except (ValueError, PermissionError, BaseExceptionGroup) as exc:
        errors = _config_errors(exc)
        if not errors:
            raise
        for error in errors:  # configuration errors name their setting
            log_event(get_logger("serve"), "configuration_error", level=40, error=str(error))
            print(f"lokal serve: {error}", file=sys.stderr)
        return 2
    return 0


def _config_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in _config_errors(sub)]
    return [exc] if isinstance(exc, ValueError | PermissionError) else []
