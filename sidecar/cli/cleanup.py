"""`lokal cleanup`: put back the operator's hosts.toml files and remove everything lokal configure added.

By default it restores every registry directory that holds lokal's files, whatever the current settings
say: a registry dropped from the list since configure must still be restored. So it reads no
`LOKAL_MIRRORED_REGISTRIES`; `--mirrored-registries` narrows it explicitly. Running it twice is harmless.
"""

from __future__ import annotations

import argparse
import os
import sys

from sidecar.cli.configure import EXIT_BAD_INPUT, add_config_path, config_path_from, log_format_from
from sidecar.hosts import HostsTreeError, SettingError, cleanup_tree, parse_registries
from sidecar.logs import get_logger, log_event, setup_logging


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cleanup",
        help="restore containerd's hosts.toml files as they were before lokal configure",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_config_path(parser)
    parser.add_argument(
        "--mirrored-registries",
        metavar="LIST",
        help="only these registries (default: every directory holding lokal's files)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        config_path, config_setting = config_path_from(args, os.environ)
        registries = None
        if args.mirrored_registries is not None:
            registries = parse_registries(args.mirrored_registries, "--mirrored-registries")
        setup_logging(log_format_from(os.environ))
        report = cleanup_tree(config_path, registries, config_setting)
    except (SettingError, HostsTreeError) as error:
        print(f"lokal cleanup: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    log_event(
        get_logger("hosts"),
        "hosts_restored",
        config_path=str(config_path),
        restored=report.restored,
        removed=report.removed,
        kept_dirs=report.kept_dirs,
    )
    return 0
