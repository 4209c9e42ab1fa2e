"""Validation of the settings that shape the hosts.toml files: pure functions, no filesystem.

Rules:
- Every check raises `SettingError` naming the setting as the operator typed it: the flag (`--listen`) or
  the environment variable (`LOKAL_LISTEN`), whichever the value came from.
- A registry name becomes a directory name under the config path, so it is checked strictly: host name
  labels and an optional port, or `_default`. Nothing that could climb out of the directory passes.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

DEFAULT_REGISTRIES: tuple[str, ...] = (
    "docker.io",
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
)
DEFAULT_LISTEN = "0.0.0.0:5050"
DEFAULT_REGISTRY_DIR = "_default"  # containerd's fallback directory for registries without their own
DEFAULT_DIAL_TIMEOUT = "200ms"  # honoured by containerd 2.1+; 1.x ignores the key without error

# containerd dials the mirror at 127.0.0.1, so the listen address must accept connections there.
_LOOPBACK_REACHABLE_HOSTS = frozenset({"0.0.0.0", "::", "localhost"})
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_REGISTRY_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*(?::(?P<port>[0-9]{{1,5}}))?$")


class SettingError(ValueError):
    """A setting's value is unusable. `str()` is the one-line message for the operator."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


@dataclass(frozen=True)
class HostsSettings:
    """Everything `lokal configure` needs to render and write the hosts.toml files."""

    listen_port: int
    registries: tuple[str, ...] = DEFAULT_REGISTRIES
    resolve_tags: bool = True
    # Keep the operator's own hosts.toml (server, skip_verify, ca, client, mirrors) after lokal's entry. Off,
    # lokal's file replaces theirs (kept as the backup) and that registry's own settings stop applying.
    prepend_existing: bool = True
    upstreams: Mapping[str, str] = field(default_factory=dict)  # registry -> server URL overrides
    dial_timeout: str = DEFAULT_DIAL_TIMEOUT

    @property
    def mirror_url(self) -> str:
        return mirror_url(self.listen_port)


def mirror_url(port: int) -> str:
    """The URL containerd uses to reach lokal on its own node."""
    return f"http://127.0.0.1:{port}"


def default_upstream(registry: str) -> str | None:
    """The real registry behind a name, as containerd would pick it; None for `_default`."""
    if registry == DEFAULT_REGISTRY_DIR:
        return None  # containerd fills in the pulled registry itself when `server` is absent
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    return f"https://{registry}"


def parse_registry_name(name: str, setting: str) -> str:
    if name == DEFAULT_REGISTRY_DIR:
        return name
    if name == "*":
        raise SettingError(setting, f"'*' is not a registry: {DEFAULT_REGISTRY_DIR} mirrors every registry")
    match = _REGISTRY_NAME.match(name)
    if match is None or len(name) > 253:
        raise SettingError(setting, f"{name!r} is not a registry host name (host or host:port, or _default)")
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise SettingError(setting, f"{name!r} has a port outside 1-65535")
    return name


def parse_registries(value: str, setting: str) -> tuple[str, ...]:
    """A comma-separated list of registry names, deduplicated in order."""
    names: list[str] = []
    for raw in value.split(","):
        name = parse_registry_name(raw.strip(), setting)
        if name not in names:
            names.append(name)
    if not names:
        raise SettingError(setting, "the list of registries is empty")
    return tuple(names)


def parse_address(value: str, setting: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets; an empty host means every address) -> (host, port). Port 0: any."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep:
        raise SettingError(setting, f"{value!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingError(setting, f"{value!r} has no port in 0-65535")
    if host not in ("", "localhost"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SettingError(setting, f"{value!r}: {host!r} is not an IP address") from None
    return host or "0.0.0.0", int(port_text)


def parse_listen(value: str, setting: str) -> tuple[str, int]:
    """lokal's own listener: an address containerd can reach at 127.0.0.1, on a fixed port."""
    host, port = parse_address(value, setting)
    if port == 0:
        raise SettingError(setting, f"{value!r}: containerd needs a fixed port in 1-65535")
    if host not in _LOOPBACK_REACHABLE_HOSTS and not _is_loopback_v4(host):
        raise SettingError(
            setting, f"{value!r}: containerd reaches lokal at 127.0.0.1: listen on 0.0.0.0, ::, or 127.0.0.1"
        )
    return host, port


def _is_loopback_v4(host: str) -> bool:
    address = ipaddress.ip_address(host)
    return address.version == 4 and address.is_loopback


def parse_bool(value: str, setting: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise SettingError(setting, f"{value!r} is not a boolean (true or false)")


def parse_upstream_url(url: str, setting: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    unsafe = any(ch.isspace() or ch in "\"'\\" for ch in url)
    if (
        parsed.scheme not in {"http", "https"}
        or not parsed.hostname
        or parsed.username is not None
        or parsed.query
        or parsed.fragment
        or unsafe
    ):
        raise SettingError(setting, f"{url!r} is not an http(s)://host[:port][/path] URL")
    try:
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SettingError(setting, f"{url!r} has an invalid port") from None
    return url.rstrip("/")


def parse_upstream_entries(value: str, setting: str) -> tuple[tuple[str, str], ...]:
    """Comma-separated REGISTRY=URL entries, each checked on its own; `check_upstreams` then checks
    them against the mirrored registries."""
    return tuple(parse_upstreams(value.split(","), None, setting).items())


def parse_upstreams(
    entries: Iterable[str], registries: Iterable[str] | None, setting: str
) -> dict[str, str]:
    """REGISTRY=URL entries -> {registry: url}; each registry must be one that is mirrored (if given)."""
    upstreams: dict[str, str] = {}
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        registry, sep, url = entry.partition("=")
        if not sep:
            raise SettingError(setting, f"{entry!r} is not REGISTRY=URL")
        registry = parse_registry_name(registry.strip(), setting)
        if registry == DEFAULT_REGISTRY_DIR:
            raise SettingError(setting, "_default has no upstream: containerd uses the pulled registry")
        upstreams[registry] = parse_upstream_url(url.strip(), setting)
    return upstreams if registries is None else check_upstreams(upstreams.items(), registries, setting)


def check_upstreams(
    upstreams: Collection[tuple[str, str]], registries: Iterable[str], setting: str
) -> dict[str, str]:
    """Already parsed (registry, url) pairs -> {registry: url}; each registry must be a mirrored one."""
    mirrored = set(registries)
    for registry, _ in upstreams:
        if registry not in mirrored:
            raise SettingError(setting, f"{registry} is not one of the mirrored registries")
    return dict(upstreams)
