"""Every setting of every command, typed, in one place: the flags, `--help`, the `LOKAL_*` environment
variables, validation and the docs' settings table all come from the dataclasses below.

Rules:
- A setting is one line: a dataclass field whose default is made by `setting`, `switch`, `choice` or
  `optional`. The field's name gives the flag (`max_relays` -> `--max-relays`) and the environment variable
  (`LOKAL_MAX_RELAYS`); the DaemonSet passes its ConfigMap as environment variables.
- A flag given on the command line wins over the environment, which wins over the default. An empty
  environment variable counts as unset (a ConfigMap key left empty means "the default").
- Booleans are bare switches with a `--no-` form; in the environment they are true/false (also 1/0,
  yes/no, on/off). Choices are listed in `--help` and matched without regard to case.
- Every value is parsed before anything starts. A bad one raises `SettingError` naming the flag or the
  variable it came from, never a traceback; nothing starts half-set.
- mypy sees each setting with its type: commands read `settings.max_relays`, never a dict.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

from sidecar.hosts.settings import (
    DEFAULT_LISTEN,
    DEFAULT_REGISTRIES,
    SettingError,
    parse_address,
    parse_bool,
    parse_listen,
    parse_registries,
    parse_upstream_entries,
)
from sidecar.membership import REGION_LABEL, ZONE_LABEL, CrossRegion, TopologyMode
from sidecar.routing.holders import DEFAULT_MAX_ENTRIES

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
Parse = Callable[[str, str], Any]  # (text, the flag or variable it came from) -> value


class Discovery(StrEnum):
    KUBERNETES = "kubernetes"  # peers from the cluster's Node objects
    NONE = "none"  # no peers: serve this node's store only


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Spec:
    """How one setting is read and shown. `default` is the text form, as an operator would write it."""

    default: str
    parse: Parse
    help: str
    choices: tuple[str, ...] = ()
    switch: bool = False
    repeatable: bool = False  # a flag given several times; comma-separated in the environment
    from_env: bool = True


def setting(default: str, parse: Callable[[str, str], T], help: str, *, repeatable: bool = False) -> T:
    """A valued setting: `--name VALUE` / `LOKAL_NAME=VALUE`."""
    spec = Spec(default, parse, help, repeatable=repeatable)
    value: T = field(default=parse(default, "default"), metadata={"spec": spec})
    return value


def optional(parse: Callable[[str, str], T], help: str, *, from_env: bool = True) -> T | None:
    """A setting that is off (None) unless given; an empty value also means off."""

    def parse_optional(text: str, name: str) -> T | None:
        return parse(text, name) if text.strip() else None

    value: T | None = field(
        default=None, metadata={"spec": Spec("", parse_optional, help, from_env=from_env)}
    )
    return value


def switch(default: bool, help: str) -> bool:
    """A boolean: `--name` / `--no-name`, `LOKAL_NAME=true|false`."""
    spec = Spec("true" if default else "false", parse_bool, help, switch=True)
    value: bool = field(default=default, metadata={"spec": spec})
    return value


def choice(default: E, help: str) -> E:
    """One of an enum's values, listed in `--help`."""
    kind = type(default)
    allowed = tuple(member.value for member in kind)

    def parse_choice(text: str, name: str) -> E:
        lowered = text.strip().lower()
        if lowered not in allowed:
            raise SettingError(name, f"{text!r} is not one of {', '.join(allowed)}")
        return kind(lowered)

    value: E = field(default=default, metadata={"spec": Spec(default.value, parse_choice, help, allowed)})
    return value


def text(value: str, name: str) -> str:
    if not value.strip():
        raise SettingError(name, "must not be empty")
    return value.strip()


def positive_int(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise SettingError(name, f"{value!r} is not a whole number") from None
    if number <= 0:
        raise SettingError(name, f"{value!r} must be > 0")
    return number


def positive_float(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingError(name, f"{value!r} is not a number") from None
    if not number > 0 or number == float("inf"):
        raise SettingError(name, f"{value!r} must be a finite number > 0")
    return number


def config_path_setting() -> str:
    return setting("/etc/containerd/certs.d", text,
                   "containerd's registry config_path, where `lokal configure` writes hosts.toml files")


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


# A Kubernetes label key: an optional DNS-subdomain prefix and "/", then a name of up to 63 characters.
_LABEL_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)


def label_key(value: str, setting: str) -> str:
    key = value.strip()
    if not _LABEL_KEY.fullmatch(key) or len(key.partition("/")[0]) > 253:
        raise SettingError(setting, f"{value!r} is not a label key (e.g. topology.kubernetes.io/region)")
    return key


# -- the models ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Base of every command's model."""

    def source(self, name: str) -> str:
        """The flag or variable a setting's value came from, for messages that name it."""
        sources: Mapping[str, str] = getattr(self, "_sources", {})
        return sources.get(name, flag_of(name))


@dataclass(frozen=True)
class MirrorSettings(Settings):
    """What `lokal serve` and `lokal configure` must agree on: the two read the same ConfigMap."""

    config_path: str = config_path_setting()
    mirrored_registries: tuple[str, ...] = setting(
        ",".join(DEFAULT_REGISTRIES), parse_registries,
        "comma-separated registries lokal mirrors (configure writes a hosts.toml for each); "
        "`_default` mirrors every other registry too")
    listen: tuple[str, int] = setting(
        DEFAULT_LISTEN, parse_listen,
        "where lokal listens; containerd always reaches it at http://127.0.0.1:PORT")
    resolve_tags: bool = switch(
        True, "lokal may resolve tags to digests (the hosts.toml `resolve` capability); off leaves tags to "
        "the registry")
    log_format: LogFormat = choice(LogFormat.JSON, "json for kubectl logs and log pipelines, text for people")


@dataclass(frozen=True)
class ServeSettings(MirrorSettings):
    """`lokal serve`."""

    containerd_socket: str = setting("/run/containerd/containerd.sock", text, "containerd's gRPC socket")
    containerd_namespace: str = setting("k8s.io", text, "the only containerd namespace lokal reads")
    containerd_config: str = setting(
        "/etc/containerd/config.toml", text,
        "containerd's config file, read when mounted: on containerd 2.x only it shows config_path")
    content_root: str | None = optional(text, "content store directory (default: from Introspection)")
    resolve_latest: bool = switch(False, "also resolve the tag 'latest'")
    discovery: Discovery = choice(
        Discovery.KUBERNETES, "where peers come from: Node objects, or none (this node's store only)")
    node_name: str | None = optional(text, "this node's name (the DaemonSet passes spec.nodeName)")
    kubeconfig: str | None = optional(text, "kubeconfig file (default: in-cluster service account)")
    region_label: str = setting(
        REGION_LABEL, label_key,
        "Node label that names a node's region (a node without it: see docs/operating.md)")
    zone_label: str = setting(ZONE_LABEL, label_key, "Node label that names a node's zone")
    topology_mode: TopologyMode = choice(
        TopologyMode.ISOLATE,
        "isolate: one P2P network per region; prefer: same zone, then region, then other regions")
    cross_region: CrossRegion = choice(
        CrossRegion.NEVER, "in prefer mode, whether a miss in this region may be fetched from another region "
        "(auto: blob by blob, when that is estimated faster than upstream)")
    cross_region_bias: float = setting(
        "1.0", positive_float, "auto crosses regions when bias x over-region time < upstream time: above 1 "
        "leans to upstream (inter-region bytes cost), below 1 to peers (a rate-limited registry)")
    cap_from_other_regions: float | None = setting(
        "", parse_rate, "cap on bytes/s received from peers in other regions, e.g. 50MB or 400mbit")
    cap_to_peers: float | None = setting(
        "", parse_rate, "cap on bytes/s uploaded to peers, all tiers together, e.g. 100MB")
    allow_unknown_clients: bool = switch(False, "serve clients that are neither loopback nor a known node")
    advertise_interval: float = setting("600", positive_float, "seconds between full re-advertisements")
    peer_token_file: str | None = optional(
        text, "file of shared peer tokens (one per line; any is accepted, the first is sent)")
    max_relays: int = setting("64", positive_int, "relays from peers at once; past it, misses go upstream")
    max_relays_per_peer: int = setting("8", positive_int, "relays from any one peer at once")
    max_peer_uploads: int = setting("32", positive_int, "bodies served to peers at once; past it, 503")
    share_downloads: bool = switch(
        True, "share while downloading: one node per scope fetches a new blob upstream, its peers follow it")
    claim_fan_out: int = setting("3", positive_int, "followers one in-progress download is handed to")
    index_max_entries: int = setting(
        str(DEFAULT_MAX_ENTRIES), positive_int,
        "holder index entries kept for other nodes (~1.2 KB each at worst: mind the memory limit)")
    header_timeout: float = setting("10", positive_float, "seconds to receive a complete request header")
    idle_timeout: float = setting("60", positive_float, "seconds an idle keep-alive connection stays open")
    max_connections: int = setting("1024", positive_int, "connections served at once; more get 503")
    drain_timeout: float = setting("10", positive_float, "seconds in-flight responses get on SIGTERM")
    metrics_listen: tuple[str, int] | None = optional(
        parse_address, "also serve /metrics on this HOST:PORT, to anyone who reaches it")
    log_level: LogLevel = choice(LogLevel.INFO, "the least severe log lines written")


@dataclass(frozen=True)
class ConfigureSettings(MirrorSettings):
    """`lokal configure`."""

    prepend_existing: bool = switch(
        True, "keep the operator's existing hosts.toml (server, skip_verify, ca, mirrors) after lokal's "
        "entry; --no-prepend-existing replaces it, keeping it only as the backup")
    upstream: tuple[tuple[str, str], ...] = setting(
        "", parse_upstream_entries,
        "REGISTRY=URL: the server for one registry instead of https://<registry> (repeatable)",
        repeatable=True)


@dataclass(frozen=True)
class CleanupSettings(Settings):
    """`lokal cleanup`: it restores whatever lokal wrote, so it reads no LOKAL_MIRRORED_REGISTRIES."""

    config_path: str = config_path_setting()
    mirrored_registries: tuple[str, ...] | None = optional(
        parse_registries, "only these registries (default: every directory holding lokal's files)",
        from_env=False)
    log_format: LogFormat = choice(LogFormat.JSON, "json for kubectl logs and log pipelines, text for people")


# -- reading -------------------------------------------------------------------------------------------

M = TypeVar("M", bound=Settings)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return "LOKAL_" + name.upper()


def specs(model: type[Any]) -> Iterator[tuple[str, Spec]]:
    for item in fields(model):
        yield item.name, spec_of(item)


def spec_of(item: Field[Any]) -> Spec:
    spec = item.metadata["spec"]
    assert isinstance(spec, Spec)
    return spec


def add_arguments(parser: argparse.ArgumentParser, model: type[Any]) -> None:
    """One argument per setting. Every default is None here: `read` applies env and defaults."""
    for name, spec in specs(model):
        where = f"env {env_of(name)}, " if spec.from_env else ""
        shown = spec.default if spec.default else "none"
        help_text = f"{spec.help} [{where}default: {shown}]"
        if spec.switch:
            parser.add_argument(flag_of(name), dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif spec.repeatable:
            parser.add_argument(flag_of(name), dest=name, action="append", default=None,
                                metavar=name.upper(), help=help_text)
        else:
            metavar = "{" + ",".join(spec.choices) + "}" if spec.choices else name.upper()
            parser.add_argument(flag_of(name), dest=name, default=None, metavar=metavar, help=help_text)


def read(model: type[M], args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> M:
    """The model from flags, else the environment, else the defaults. Raises SettingError."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, spec in specs(model):
        given = getattr(args, name, None) if args is not None else None
        variable = env_of(name)
        if given is not None:
            source = flag_of(name)
            if spec.switch:
                values[name] = bool(given)
            else:
                values[name] = spec.parse(",".join(given) if spec.repeatable else given, source)
        elif spec.from_env and env.get(variable, "").strip():
            source = variable
            values[name] = spec.parse(env[variable], source)
        else:
            continue  # the field's default
        sources[name] = source
    settings = model(**values)
    object.__setattr__(settings, "_sources", sources)
    return settings


def as_log_fields(settings: object) -> dict[str, Any]:
    """The effective settings for the startup `config` line (nothing secret: the token is a file path)."""
    return {
        item.name: getattr(settings, item.name)
        for item in fields(settings)  # type: ignore[arg-type]
        if getattr(settings, item.name) is not None
    }


def settings_table() -> str:
    """The markdown table of every `LOKAL_*` setting, which docs/operating.md shows between its
    `settings-table` markers (`python scripts/settings_table.py` rewrites it; a test checks it)."""
    read_by: dict[str, list[str]] = {}
    specs_by_name: dict[str, Spec] = {}
    for command, model in (("serve", ServeSettings), ("configure", ConfigureSettings)):
        for name, spec in specs(model):
            if spec.from_env:
                read_by.setdefault(name, []).append(command)
                specs_by_name[name] = spec
    lines = ["| variable | flag | default | read by | meaning |", "|---|---|---|---|---|"]
    for name, commands in read_by.items():
        spec = specs_by_name[name]
        default = f"`{', '.join(spec.default.split(','))}`" if spec.default else "unset"
        meaning = spec.help
        if spec.choices:
            meaning += "; one of " + ", ".join(f"`{c}`" for c in spec.choices)
        flag = f"`{flag_of(name)}`" + (f" / `--no-{name.replace('_', '-')}`" if spec.switch else "")
        lines.append(f"| `{env_of(name)}` | {flag} | {default} | {', '.join(commands)} | {meaning} |")
    return "\n".join(lines) + "\n"
