"""`lokal configure`: write containerd's hosts.toml files so that containerd asks lokal first.

Runs as the DaemonSet's init container. Each setting comes from its flag, else from the environment
variable of the same name (`--mirrored-registries` -> `LOKAL_MIRRORED_REGISTRIES`, which is how the
DaemonSet passes its ConfigMap), else from the default. Bad input exits with code 2 and one line on stderr
that names the flag or variable the value came from; nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sidecar.hosts import (
    HostsSettings,
    HostsTreeError,
    SettingError,
    check_upstreams,
    configure_tree,
)
from sidecar.logs import get_logger, log_event, setup_logging
from sidecar.settings import ConfigureSettings, add_arguments, read

EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "configure",
        help="write containerd hosts.toml files that put lokal first",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_arguments(parser, ConfigureSettings)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = read(ConfigureSettings, args)
        hosts = hosts_settings(settings)
        setup_logging(settings.log_format)
        config_path = Path(settings.config_path)
        report = configure_tree(config_path, hosts, settings.source("config_path"))
    except (SettingError, HostsTreeError) as error:
        print(f"lokal configure: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logger = get_logger("hosts")
    if report.backed_up and not hosts.prepend_existing:
        log_event(
            logger, "config_warning", logging.WARNING,
            warning=f"--no-prepend-existing: lokal's hosts.toml replaced yours for "
            f"{', '.join(report.backed_up)}; their server, skip_verify, ca and mirrors no longer apply "
            "(kept as hosts.toml.lokal-backup)",
        )
    log_event(
        logger,
        "hosts_configured",
        config_path=str(config_path),
        mirror=hosts.mirror_url,
        written=report.written,
        unchanged=report.unchanged,
        backed_up=report.backed_up,
        pruned=report.pruned,
    )
    return 0


def hosts_settings(settings: ConfigureSettings) -> HostsSettings:
    """What the hosts.toml renderer needs; each --upstream must name a mirrored registry."""
    upstreams = check_upstreams(settings.upstream, settings.mirrored_registries, settings.source("upstream"))
    return HostsSettings(
        listen_port=settings.listen[1],
        registries=settings.mirrored_registries,
        resolve_tags=settings.resolve_tags,
        prepend_existing=settings.prepend_existing,
        upstreams=upstreams,
    )
