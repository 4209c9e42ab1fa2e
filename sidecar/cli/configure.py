"""`lokal configure`: write containerd's hosts.toml files so that containerd asks lokal first.

Runs as the DaemonSet's init container. Each setting comes from its flag, else from the environment
variable of the same name (`--mirrored-registries` -> `LOKAL_MIRRORED_REGISTRIES`, which is how the
DaemonSet passes its ConfigMap), else from the default. Bad input exits with code 2 and one line on stderr
that names the flag or variable the value came from; nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from sidecar.hosts import (
    DEFAULT_LISTEN,
    DEFAULT_REGISTRIES,
    HostsSettings,
    HostsTreeError,
    SettingError,
    configure_tree,
    parse_bool,
    parse_listen,
    parse_registries,
    parse_upstreams,
)
from sidecar.logs import LogFormat, get_logger, log_event, setup_logging

DEFAULT_CONFIG_PATH = "/etc/containerd/certs.d"
EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "configure",
        help="write containerd hosts.toml files that put lokal first",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_config_path(parser)
    parser.add_argument(
        "--mirrored-registries",
        metavar="LIST",
        help=f"comma-separated registries, `_default` allowed (default: {','.join(DEFAULT_REGISTRIES)})",
    )
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help=f"where lokal serve listens (default: {DEFAULT_LISTEN})"
    )
    parser.add_argument(
        "--resolve-tags",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="let lokal resolve tags to digests (default: on)",
    )
    parser.add_argument(
        "--prepend-existing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the operator's existing hosts.toml (server, skip_verify, ca, mirrors) after lokal's entry "
        "(default: on; --no-prepend-existing replaces it, keeping it only as the backup)",
    )
    parser.add_argument(
        "--upstream",
        action="append",
        metavar="REGISTRY=URL",
        help="the server for one registry instead of https://<registry> (repeatable)",
    )
    parser.set_defaults(run=run)


def add_config_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-path",
        metavar="DIR",
        help=f"containerd's registry config_path (default: {DEFAULT_CONFIG_PATH})",
    )


def run(args: argparse.Namespace) -> int:
    env = os.environ
    try:
        config_path, config_setting = config_path_from(args, env)
        settings = settings_from(args, env)
        setup_logging(log_format_from(env))
        report = configure_tree(config_path, settings, config_setting)
    except (SettingError, HostsTreeError) as error:
        print(f"lokal configure: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logger = get_logger("hosts")
    if report.backed_up and not settings.prepend_existing:
        log_event(
            logger, "config_warning", level=logging.WARNING,
            warning=f"--no-prepend-existing: lokal's hosts.toml replaced yours for "
            f"{', '.join(report.backed_up)}; their server, skip_verify, ca and mirrors no longer apply "
            "(kept as hosts.toml.lokal-backup)",
        )
    log_event(
        logger,
        "hosts_configured",
        config_path=str(config_path),
        mirror=settings.mirror_url,
        written=report.written,
        unchanged=report.unchanged,
        backed_up=report.backed_up,
        pruned=report.pruned,
    )
    return 0


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> HostsSettings:
    registries = parse_registries(
        *choose(args.mirrored_registries, "--mirrored-registries", env, ",".join(DEFAULT_REGISTRIES))
    )
    _host, port = parse_listen(*choose(args.listen, "--listen", env, DEFAULT_LISTEN))
    if args.upstream is not None:
        upstreams = parse_upstreams(args.upstream, registries, "--upstream")
    else:
        upstreams = parse_upstreams(env.get("LOKAL_UPSTREAM", "").split(","), registries, "LOKAL_UPSTREAM")
    return HostsSettings(
        listen_port=port,
        registries=registries,
        resolve_tags=choose_bool(args.resolve_tags, "--resolve-tags", env, default=True),
        prepend_existing=choose_bool(args.prepend_existing, "--prepend-existing", env, default=True),
        upstreams=upstreams,
    )


def config_path_from(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Path, str]:
    value, setting = choose(args.config_path, "--config-path", env, DEFAULT_CONFIG_PATH)
    if not value.strip():
        raise SettingError(setting, "is empty")
    return Path(value), setting


def env_name(flag: str) -> str:
    """`--mirrored-registries` -> `LOKAL_MIRRORED_REGISTRIES`."""
    return "LOKAL_" + flag.removeprefix("--").replace("-", "_").upper()


def choose(value: str | None, flag: str, env: Mapping[str, str], default: str) -> tuple[str, str]:
    """(value, the setting it came from): the flag, else the environment, else the default."""
    if value is not None:
        return value, flag
    name = env_name(flag)
    if env.get(name, "").strip():
        return env[name], name
    return default, flag


def choose_bool(value: bool | None, flag: str, env: Mapping[str, str], default: bool) -> bool:
    if value is not None:
        return value
    name = env_name(flag)
    if env.get(name, "").strip():
        return parse_bool(env[name], name)
    return default


def log_format_from(env: Mapping[str, str]) -> LogFormat:
    value = env.get("LOKAL_LOG_FORMAT", "json").strip() or "json"
    if value == "json":
        return "json"
    if value == "text":
        return "text"
    raise SettingError("LOKAL_LOG_FORMAT", f"{value!r} is not json or text")
