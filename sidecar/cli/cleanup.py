"""`lokal cleanup`: put back the operator's hosts.toml files and remove everything lokal configure added.

By default it restores every registry directory that holds lokal's files, whatever the current settings
say: a registry dropped from the list since configure must still be restored. So it reads no
`LOKAL_MIRRORED_REGISTRIES`; `--mirrored-registries` narrows it explicitly. Running it twice is harmless.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sidecar.cli.configure import EXIT_BAD_INPUT
from sidecar.hosts import HostsTreeError, SettingError, cleanup_tree
from sidecar.logs import get_logger, log_event, setup_logging
from sidecar.settings import CleanupSettings, add_arguments, read


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cleanup",
        help="restore containerd's hosts.toml files as they were before lokal configure",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_arguments(parser, CleanupSettings)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = read(CleanupSettings, args)
        setup_logging(settings.log_format)
        config_path = Path(settings.config_path)
        report = cleanup_tree(config_path, settings.mirrored_registries, settings.source("config_path"))
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
