"""Request planning for the registry endpoint: what a request asks for, or why it is refused. Pure.

Rules:
- Every piece of request text is validated here (name grammar, digest grammar, tag grammar, `ns`), before
  any store, file or peer is touched.
- `/metrics` and `/_lokal/debug/` are for the operator (Prometheus, `lokal status`), read-only.
- The answer follows containerd's reactions (docs/: anything we cannot serve is a fast 404 so containerd
  moves on; write methods are 405; never 408 or 429).
- A reference that cannot name anything (a malformed tag or digest) is a 404 `*_UNKNOWN`, as
  docker-registry and the distribution spec's conformance answer it: status and code always agree.
- Every refusal carries a bounded `RefusalKind`: the handler logs (rate-limited) and counts by it.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote

from sidecar.http.messages import parse_query
from sidecar.oci import (
    Digest,
    ErrorCode,
    InvalidDigest,
    InvalidReference,
    Tag,
    is_registry_host,
    is_repository_name,
    parse_digest,
    parse_reference,
)

_MANIFEST = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)")
_BLOB = re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)")
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Health:
    kind: str  # "healthz" | "readyz"


@dataclass(frozen=True, slots=True)
class PeerCall:
    path: str  # below /_lokal/v1/


@dataclass(frozen=True, slots=True)
class OperatorCall:
    """For this node's operator, not for containerd: `/metrics`, or `/_lokal/debug/<path>`."""

    kind: str  # "metrics" | "debug"
    path: str = ""  # below /_lokal/debug/


@dataclass(frozen=True, slots=True)
class ManifestRequest:
    registry: str
    repository: str
    reference: Digest | Tag


@dataclass(frozen=True, slots=True)
class BlobRequest:
    registry: str
    repository: str
    digest: Digest


class RefusalKind(StrEnum):
    """Why a request was refused before any store or peer was asked. Bounded: a log field, a label."""

    NOT_MIRRORED = "not_mirrored"  # ns names a registry this node does not mirror
    NO_NS = "no_ns"  # no ns, and the default registry is not mirrored
    BAD_NS = "bad_ns"  # ns is not a registry host, or repeated
    LATEST = "latest"  # 'latest' with --resolve-latest off
    TAGS_OFF = "tags_off"  # a tag with --resolve-tags off
    WRITE = "write"  # any method but GET and HEAD: lokal is pull-only
    BAD_NAME = "bad_name"  # a repository name outside the grammar, `..` included
    BAD_REFERENCE = "bad_reference"  # a tag or digest outside the grammar
    NOT_REGISTRY = "not_registry"  # not below /v2/, or a /v2/ path lokal does not serve
    # Refused by the handler, after planning:
    PEER_TOKEN = "peer_token"  # a peer without the right --peer-token-file token
    NOT_ADMITTED = "not_admitted"  # a client the topology admission does not let in


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    code: ErrorCode
    message: str
    kind: RefusalKind


Plan = Ping | Health | PeerCall | OperatorCall | ManifestRequest | BlobRequest | Refusal


@dataclass(frozen=True, slots=True)
class RouteConfig:
    mirrored_registries: Collection[str] | None  # None: every registry
    resolve_tags: bool = True
    resolve_latest: bool = False
    default_registry: str = "docker.io"  # containerd always sends ns; a bare request means docker.io


def query_of(query_string: str) -> dict[str, list[str]]:
    """The query parameters. containerd sends exactly `ns=<registry>`: that case skips the general parser."""
    name, eq, value = query_string.partition("=")
    if eq and "&" not in value and "%" not in query_string and "+" not in query_string and ";" not in value:
        return {name: [value]}
    return parse_query(query_string)


def plan_request(method: str, path: str, query: dict[str, list[str]], config: RouteConfig) -> Plan:
    if path in ("/healthz", "/readyz"):
        return Health(path[1:]) if method in READ_METHODS else _not_allowed()
    if path.startswith("/_lokal/v1/"):
        return PeerCall(path.removeprefix("/_lokal/v1/"))
    if path == "/metrics" or path.startswith("/_lokal/debug/"):
        if method not in READ_METHODS:
            return _not_allowed()
        if path == "/metrics":
            return OperatorCall("metrics")
        return OperatorCall("debug", path.removeprefix("/_lokal/debug/"))
    if path in ("/v2", "/v2/"):
        return Ping() if method in READ_METHODS else _not_allowed()
    if not path.startswith("/v2/"):
        return Refusal(404, ErrorCode.UNSUPPORTED, "not a registry path", RefusalKind.NOT_REGISTRY)
    if method not in READ_METHODS:
        return _not_allowed()  # lokal is pull-only
    registry = _registry(query, config)
    if isinstance(registry, Refusal):
        return registry
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return Refusal(400, ErrorCode.NAME_INVALID, "path is not UTF-8", RefusalKind.BAD_NAME)
    if match := _BLOB.fullmatch(decoded):
        name = match["name"]
        if not is_repository_name(name):
            return _bad_name()
        try:
            return BlobRequest(registry, name, parse_digest(match["digest"]))
        except InvalidDigest as exc:
            return Refusal(404, ErrorCode.BLOB_UNKNOWN, str(exc), RefusalKind.BAD_REFERENCE)
    if match := _MANIFEST.fullmatch(decoded):
        name = match["name"]
        if not is_repository_name(name):
            return _bad_name()
        try:
            reference = parse_reference(match["reference"])
        except (InvalidDigest, InvalidReference) as exc:
            return Refusal(404, ErrorCode.MANIFEST_UNKNOWN, str(exc), RefusalKind.BAD_REFERENCE)
        if isinstance(reference, Tag):
            refusal = _tag_refusal(reference, config)
            if refusal is not None:
                return refusal
        return ManifestRequest(registry, name, reference)
    return Refusal(404, ErrorCode.UNSUPPORTED, "unsupported registry path", RefusalKind.NOT_REGISTRY)


def _registry(query: dict[str, list[str]], config: RouteConfig) -> str | Refusal:
    values = query.get("ns", [])
    registry = values[0] if values else config.default_registry
    if len(values) > 1 or not is_registry_host(registry):
        return Refusal(400, ErrorCode.NAME_INVALID, "invalid ns parameter", RefusalKind.BAD_NS)
    if config.mirrored_registries is not None and registry not in config.mirrored_registries:
        if not values:
            return Refusal(404, ErrorCode.NAME_UNKNOWN,
                           f"no ns parameter, and the default registry {registry} is not mirrored here",
                           RefusalKind.NO_NS)
        return Refusal(404, ErrorCode.NAME_UNKNOWN, f"registry {registry} is not mirrored here",
                       RefusalKind.NOT_MIRRORED)
    return registry


def _tag_refusal(tag: Tag, config: RouteConfig) -> Refusal | None:
    if not config.resolve_tags:
        return Refusal(404, ErrorCode.MANIFEST_UNKNOWN, "tag resolution is off", RefusalKind.TAGS_OFF)
    if tag.value == "latest" and not config.resolve_latest:
        return Refusal(404, ErrorCode.MANIFEST_UNKNOWN, "'latest' is not resolved (it moves too often)",
                       RefusalKind.LATEST)
    return None


def _bad_name() -> Refusal:
    return Refusal(400, ErrorCode.NAME_INVALID, "invalid repository name", RefusalKind.BAD_NAME)


def _not_allowed() -> Refusal:
    return Refusal(405, ErrorCode.UNSUPPORTED, "lokal is a pull-only mirror", RefusalKind.WRITE)
