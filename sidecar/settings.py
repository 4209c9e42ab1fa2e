"""`lokal serve` settings: one table, read from flags and from `LOKAL_*` environment variables.

Rules:
- Every setting is a flag `--name` and an environment variable `LOKAL_NAME` (the DaemonSet's ConfigMap).
  A flag given on the command line wins over the environment, which wins over the default.
- A bad value raises `SettingError` naming the flag or variable it came from; nothing starts half-set.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.hosts.settings import (
    DEFAULT_LISTEN,
    DEFAULT_REGISTRIES,
    SettingError,
    parse_bool,
    parse_registries,
)
from sidecar.routing.holders import DEFAULT_MAX_ENTRIES

Parser = Callable[[str, str], Any]


def _choice(*allowed: str) -> Parser:
    def parse(value: str, setting: str) -> str:
        if value not in allowed:
            raise SettingError(setting, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def _positive(kind: type) -> Parser:
    def parse(value: str, setting: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise SettingError(setting, f"{value!r} is not a {kind.__name__}") from None
        if number <= 0:
            raise SettingError(setting, f"{value!r} must be > 0")
        return number

    return parse


def _text(value: str, setting: str) -> str:
    if not value.strip():
        raise SettingError(setting, "must not be empty")
    return value.strip()


def _optional_text(value: str, setting: str) -> str | None:
    return value.strip() or None


_RATE_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3,
               "kbit": 125, "mbit": 125e3, "gbit": 125e6}


def parse_rate(value: str, setting: str) -> float | None:
    """Bytes per second from `50MB`, `64MiB`, `400mbit` or a plain number; empty or 0: no cap."""
    text = value.strip().lower().removesuffix("/s")
    if not text or text == "0":
        return None
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        rate = float(number) * _RATE_UNITS[unit]
    except (ValueError, KeyError):
        raise SettingError(setting, f"{value!r} is not a rate like 50MB, 64MiB or 400mbit") from None
    if not 0 < rate < float("inf"):  # also refuses NaN
        raise SettingError(setting, f"{value!r} must be > 0 (or empty for no cap)")
    return rate


def _listen(value: str, setting: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SettingError(setting, f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def _optional_listen(value: str, setting: str) -> tuple[str, int] | None:
    return _listen(value, setting) if value.strip() else None


# A Kubernetes label key: an optional DNS-subdomain prefix and "/", then a name of up to 63 characters.
_LABEL_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)


def _label_key(value: str, setting: str) -> str:
    key = value.strip()
    if not _LABEL_KEY.fullmatch(key) or len(key.partition("/")[0]) > 253:
        raise SettingError(setting, f"{value!r} is not a label key (e.g. topology.kubernetes.io/region)")
    return key


def _registries(value: str, setting: str) -> tuple[str, ...] | None:
    return None if value.strip() == "*" else parse_registries(value, setting)


@dataclass(frozen=True)
class Option:
    name: str  # flag without dashes, e.g. "containerd-socket"
    default: str
    parse: Parser
    help: str

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def env(self) -> str:
        return "LOKAL_" + self.name.upper().replace("-", "_")

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")


SERVE_OPTIONS: tuple[Option, ...] = (
    Option("listen", DEFAULT_LISTEN, _listen, "address to serve on (containerd uses 127.0.0.1:PORT)"),
    Option("containerd-socket", "/run/containerd/containerd.sock", _text, "containerd's gRPC socket"),
    Option("containerd-namespace", "k8s.io", _text, "the only containerd namespace lokal reads"),
    Option("content-root", "", _optional_text, "content store directory (default: from Introspection)"),
    Option("config-path", "/etc/containerd/certs.d", _text,
           "where `lokal configure` writes hosts.toml files (checked against containerd's config_path)"),
    Option("containerd-config", "/etc/containerd/config.toml", _text,
           "containerd's config file, read when mounted: on containerd 2.x only it shows config_path"),
    Option("mirrored-registries", ",".join(DEFAULT_REGISTRIES), _registries,
           "comma-separated registries lokal mirrors ('*' for any)"),
    Option("resolve-tags", "true", parse_bool, "answer manifest requests by tag from the local store"),
    Option("resolve-latest", "false", parse_bool, "also resolve the tag 'latest'"),
    Option("discovery", "kubernetes", _choice("kubernetes", "none"),
           "where peers come from: Node objects, or none (serve only the local store)"),
    Option("node-name", "", _optional_text, "this node's name (the DaemonSet passes spec.nodeName)"),
    Option("kubeconfig", "", _optional_text, "kubeconfig file (default: in-cluster service account)"),
    Option("region-label", "topology.kubernetes.io/region", _label_key,
           "Node label that names a node's region (a node without it: see docs/operating.md)"),
    Option("zone-label", "topology.kubernetes.io/zone", _label_key, "Node label that names a node's zone"),
    Option("topology-mode", "prefer", _choice("isolate", "prefer"),
           "isolate: one P2P network per region; prefer: zone > region > other regions"),
    Option("cross-region", "never", _choice("never", "always", "auto"),
           "in prefer mode, whether a miss in this region may be fetched from another region "
           "(auto: blob by blob, when that is estimated faster than upstream)"),
    Option("cross-region-bias", "1.0", _positive(float),
           "auto crosses regions when bias x over-region time < upstream time: above 1 leans to upstream "
           "(inter-region bytes cost), below 1 to peers (a rate-limited registry)"),
    Option("cap-from-other-regions", "", parse_rate,
           "cap on bytes/s received from peers in other regions, e.g. 50MB or 400mbit (unset: none)"),
    Option("cap-to-peers", "", parse_rate,
           "cap on bytes/s uploaded to peers, all tiers together, e.g. 100MB (unset: none)"),
    Option("allow-unknown-clients", "false", parse_bool,
           "serve clients that are neither loopback nor a known node"),
    Option("advertise-interval", "600", _positive(float), "seconds between full re-advertisements"),
    Option("peer-token-file", "", _optional_text,
           "file of shared peer tokens (one per line; any is accepted, the first is sent)"),
    Option("max-relays", "64", _positive(int), "relays from peers at once; past it, misses go upstream"),
    Option("max-relays-per-peer", "8", _positive(int), "relays from any one peer at once"),
    Option("max-peer-uploads", "32", _positive(int), "bodies served to peers at once; past it, 503"),
    Option("share-downloads", "true", parse_bool,
           "share while downloading: one node per scope fetches a new blob upstream, its peers follow it"),
    Option("claim-fan-out", "3", _positive(int), "followers one in-progress download is handed to"),
    Option("index-max-entries", str(DEFAULT_MAX_ENTRIES), _positive(int),
           "holder index entries kept for other nodes (~1.2 KB each at worst: mind the memory limit)"),
    Option("header-timeout", "10", _positive(float), "seconds to receive a complete request header"),
    Option("idle-timeout", "60", _positive(float), "seconds an idle keep-alive connection stays open"),
    Option("max-connections", "1024", _positive(int), "connections served at once; more get 503"),
    Option("drain-timeout", "10", _positive(float), "seconds in-flight responses get on SIGTERM"),
    Option("metrics-listen", "", _optional_listen,
           "also serve /metrics on this HOST:PORT, to anyone who reaches it (default: only on --listen)"),
    Option("log-format", "json", _choice("json", "text"), "json lines for kubectl logs, or text"),
    Option("log-level", "info", _choice("debug", "info", "warning", "error"), "log level"),
)


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...] = SERVE_OPTIONS) -> None:
    for option in options:
        parser.add_argument(
            option.flag,
            dest=option.attr,
            default=None,
            metavar=option.attr.upper(),
            help=f"{option.help} [env {option.env}, default {option.default!r}]",
        )


def resolve(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    options: tuple[Option, ...] = SERVE_OPTIONS,
) -> dict[str, Any]:
    """Every option's parsed value: flag, else environment, else default. Raises SettingError."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for option in options:
        given = getattr(args, option.attr, None)
        if given is not None:
            values[option.attr] = option.parse(given, option.flag)
        elif option.env in env:
            values[option.attr] = option.parse(env[option.env], option.env)
        else:
            values[option.attr] = option.parse(option.default, option.flag)
    return values
