"""Rendering one registry's hosts.toml: pure functions from settings (and an operator's file) to text.

Rules:
- The text comes from the template `hosts.toml.in` (package data, so it ships with a non-editable install);
  the operator's own tables are written back with `toml_writer`.
- Every file has exactly one lokal `[host."http://127.0.0.1:<port>"]` table, first, so containerd asks lokal
  before anything else. A file with `server` and no host table is never produced: containerd 1.6.20 rejects
  that shape ("invalid `host` tree") and silently falls back to its defaults.
- `server` names the real upstream. `_default` gets no `server`: containerd then uses the registry being
  pulled, which is what a catch-all needs.
- The first line marks the file as lokal's (`is_lokal_file`); cleanup relies on it.
- An operator's existing file (`ExistingHosts`), when prepended, keeps its mirrors in order after lokal's,
  and its server-level settings (`ca`, `client`, `skip_verify`, `header`, ...). Relative certificate paths
  stay valid because containerd resolves them against the hosts.toml directory, which does not change.
"""

from __future__ import annotations

import functools
import importlib.resources
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.hosts import toml_writer
from sidecar.hosts.settings import HostsSettings, default_upstream

LOKAL_FIRST_LINE = "# Written by lokal configure."


class ExistingHostsError(ValueError):
    """An operator's hosts.toml that cannot be kept (not TOML, or not containerd's shape)."""


@dataclass(frozen=True)
class ExistingHosts:
    """The parts of an operator's hosts.toml that `--prepend-existing` keeps."""

    server: str | None = None
    server_settings: Mapping[str, Any] = field(default_factory=dict)  # top-level keys other than server
    hosts: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # (URL, table), in file order


def is_lokal_file(text: str) -> bool:
    return text.startswith(LOKAL_FIRST_LINE)


def parse_existing(text: str, source: str) -> ExistingHosts:
    """Read an operator's hosts.toml; `source` (its path) names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ExistingHostsError(f"{source}: not valid TOML ({error})") from None
    server = data.pop("server", None)
    if server is not None and not isinstance(server, str):
        raise ExistingHostsError(f"{source}: `server` is not a string")
    hosts = data.pop("host", {})
    if not isinstance(hosts, dict) or not all(isinstance(v, dict) for v in hosts.values()):
        raise ExistingHostsError(f'{source}: `host` is not a table of [host."URL"] tables')
    return ExistingHosts(server=server, server_settings=data, hosts=tuple(hosts.items()))


def render_hosts_toml(registry: str, settings: HostsSettings, existing: ExistingHosts | None = None) -> str:
    """The full hosts.toml for `registry`. Pass `existing` only to keep an operator's mirrors after lokal's.

    The server is, in order of precedence: the `upstreams` override, the operator's own `server` (when
    prepending), the registry's real upstream.
    """
    kept = existing or ExistingHosts()
    server = settings.upstreams.get(registry) or kept.server or default_upstream(registry)
    top: dict[str, Any] = {"server": server} if server else {}
    top.update(kept.server_settings)
    server_section = "\n".join(toml_writer.table([], top)) + "\n\n" if top else ""

    mirror = settings.mirror_url
    operator_hosts = "".join(
        "\n" + "\n".join(toml_writer.table(["host", url], table, indent="  ")) + "\n"
        for url, table in kept.hosts
        if url.rstrip("/") != mirror  # never list lokal twice
    )
    capabilities = ["pull", "resolve"] if settings.resolve_tags else ["pull"]
    text = _template().substitute(
        server_section=server_section,
        mirror_key=toml_writer.quote(mirror),
        capabilities=toml_writer.value(capabilities),
        dial_timeout=toml_writer.quote(settings.dial_timeout),
        operator_hosts=operator_hosts,
    )
    return text.rstrip("\n") + "\n"


@functools.cache
def _template() -> string.Template:
    text = importlib.resources.files("sidecar.hosts").joinpath("hosts.toml.in").read_text(encoding="utf-8")
    return string.Template(text)
