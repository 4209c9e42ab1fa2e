"""From a Kubernetes Node object to a `Peer`, and the once-per-node report of what was wrong with it.

Rules:
- Pure: `parse_node` takes the object (a JSON dict as the API sends it, or a client model such as V1Node)
  and returns the Peer plus a list of problems. It never raises on odd input.
- A node with problems is still a member when it has a name: no InternalIP gives `address=None` (it is
  then never used as a provider), odd labels give unknown topology (""), a missing Ready condition gives
  not ready. Only a node without a name is dropped (it cannot be keyed).
- Region and zone come from the configured label keys (`TopologyLabels`: by default
  `topology.kubernetes.io/*`, falling back to the deprecated `failure-domain.beta.kubernetes.io/*`).
  Ready is `conditions[type=Ready].status == "True"` and no deletionTimestamp.
- Addresses are canonical text (`ipaddress`), so they compare equal to a request's source address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.cluster.config import AddressFamily
from sidecar.membership import Peer, TopologyLabels

DEFAULT_LABELS = TopologyLabels()

# Kubernetes label value syntax: empty, or up to 63 alphanumerics with - _ . inside.
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


@dataclass(frozen=True, slots=True)
class ParsedNode:
    peer: Peer | None  # None only when the object has no usable name
    problems: tuple[str, ...] = ()
    resource_version: str | None = None


def parse_node(
    obj: object, *, self_name: str, family: AddressFamily = "ipv4", labels: TopologyLabels = DEFAULT_LABELS
) -> ParsedNode:
    """The Peer that Node object `obj` describes, and what is wrong with it (empty when nothing)."""
    node = _as_mapping(obj)
    if node is None:
        return ParsedNode(None, (f"not a Node object: {type(obj).__name__}",))
    metadata = _mapping(_field(node, "metadata"))
    status = _mapping(_field(node, "status"))
    name = _field(metadata, "name")
    resource_version = _field(metadata, "resourceVersion", "resource_version")
    rv = resource_version if isinstance(resource_version, str) else None
    if not isinstance(name, str) or not name:
        return ParsedNode(None, ("no metadata.name",), rv)
    problems: list[str] = []
    values = _labels(_field(metadata, "labels"), problems)
    region = _topology_label(values, labels.region_keys, problems)
    zone = _topology_label(values, labels.zone_keys, problems)
    address = _internal_ip(_field(status, "addresses"), family, problems)
    ready = _ready(_field(status, "conditions"), problems)
    if _field(metadata, "deletionTimestamp", "deletion_timestamp"):
        ready = False  # being deleted: do not start new transfers from it
    peer = Peer(name=name, address=address, region=region, zone=zone, ready=ready, is_self=name == self_name)
    return ParsedNode(peer, tuple(problems), rv)


class NodeProblemLog:
    """Reports a node's problems once, not on every watch event: again only when they change."""

    def __init__(self, report: Callable[[str, tuple[str, ...]], None]) -> None:
        self._report = report
        self._last: dict[str, tuple[str, ...]] = {}

    def note(self, name: str, problems: tuple[str, ...]) -> None:
        if self._last.get(name, ()) == problems:
            return
        if problems:
            self._last[name] = problems
            self._report(name, problems)
        else:
            self._last.pop(name, None)

    def forget(self, name: str) -> None:
        self._last.pop(name, None)


def _as_mapping(obj: object) -> Mapping[str, Any] | None:
    if isinstance(obj, Mapping):
        return obj
    to_dict = getattr(obj, "to_dict", None)  # kubernetes client models (snake_case keys)
    if callable(to_dict):
        try:
            converted = to_dict()
        except Exception:  # a broken model must not crash the watch
            return None
        return converted if isinstance(converted, Mapping) else None
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _field(mapping: Mapping[str, Any], *names: str) -> Any:
    """The first present key: JSON uses camelCase, the client's to_dict() snake_case."""
    for name in names:
        value = mapping.get(name)
        if value is not None:
            return value
    return None


def _labels(value: object, problems: list[str]) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"metadata.labels is not a map but {type(value).__name__}")
        return {}
    return {str(k): v for k, v in value.items()}


def _topology_label(labels: Mapping[str, Any], keys: tuple[str, ...], problems: list[str]) -> str:
    for key in keys:
        if key not in labels:
            continue
        value = labels[key]
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            problems.append(f"label {key} has an invalid value {value!r}")
            continue
        if value:
            return value
    if not any(key in labels for key in keys):
        problems.append(f"no {keys[0]} label")
    return ""


def _internal_ip(value: object, family: AddressFamily, problems: list[str]) -> str | None:
    version = 4 if family == "ipv4" else 6
    other_families = False
    if isinstance(value, list):
        for entry in value:
            entry_map = _mapping(entry)
            if _field(entry_map, "type") != "InternalIP":
                continue
            text = _field(entry_map, "address")
            try:
                ip = ipaddress.ip_address(text) if isinstance(text, str) else None
            except ValueError:
                ip = None
            if ip is None:
                problems.append(f"InternalIP {text!r} is not an IP address")
            elif ip.version == version:
                return str(ip)
            else:
                other_families = True
    elif value is not None:
        problems.append(f"status.addresses is not a list but {type(value).__name__}")
    if other_families:
        problems.append(f"no {family} InternalIP (only the other family)")
    else:
        problems.append("no InternalIP")
    return None


def _ready(value: object, problems: list[str]) -> bool:
    if isinstance(value, list):
        for entry in value:
            entry_map = _mapping(entry)
            if _field(entry_map, "type") == "Ready":
                return bool(_field(entry_map, "status") == "True")
    problems.append("no Ready condition")
    return False
