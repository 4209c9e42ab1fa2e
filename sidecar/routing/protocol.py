"""The peer protocol under `/_lokal/v1/`: message types and a strict, pure JSON codec.

Theory of operation: the HTTP layer hands the request body bytes to `decode_*`; a `ProtocolError` carries
the status to answer (400 malformed, 413 oversize) and a message naming the offending field. Nothing else
escapes a decoder, whatever the bytes (the fuzz tests hold us to that).

Endpoints and schemas (compact JSON, UTF-8, no extra fields, no duplicate fields):

  POST /_lokal/v1/advertise
    request  {"add": [key, ...], "remove": [key, ...]}        both lists optional, together <= MAX_KEYS
    reply    {"stored": int, "refused": int}                   refused > 0: the holder's bound was hit
  POST /_lokal/v1/lookup
    request  {"keys": [key, ...], "claim": scope}             1..MAX_LOOKUP_KEYS keys; "claim" optional
    reply    {"providers": {key: [node name, ...], ...},      only keys with providers; <= MAX_PROVIDERS each
              "fetching": {key: [node name, ...], ...},       only with "claim": in-progress providers
              "claimed": [key, ...]}                          only with "claim": the asker fetches these
  POST /_lokal/v1/fetching
    request  {"scope": scope, "renew": [key, ...], "done": [key, ...]}     lists optional, <= MAX_KEYS
    reply    {"renewed": int}

A scope is a region name, or "*" for the whole cluster (see `claims.py`). With "claim", a home that knows
no holder of a key records the asker as fetching it (share while downloading): it becomes the claimant
when nobody else fetches the key in that scope, else it gets the fetchers to follow in "fetching".

A key is a digest or a tag key (see `keys.py`). The advertiser is never named in the body: the holder
identifies it by the request's source address. A requester outside the membership gets 403 (not here: the
service raises `NotAMember`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.routing.keys import MAX_KEY_LENGTH, is_index_key

PREFIX = "/_lokal/v1/"
ADVERTISE_PATH = PREFIX + "advertise"
LOOKUP_PATH = PREFIX + "lookup"
FETCHING_PATH = PREFIX + "fetching"
CONTENT_TYPE = "application/json"

MAX_KEYS = 2048  # per advertise request (add + remove); the advertiser chunks to this
MAX_LOOKUP_KEYS = 64
MAX_PROVIDERS = 64  # per key in a lookup reply; the holder picks which (same zone as the asker first)
MAX_NODE_NAME_LENGTH = 253
# Worst case of a full advertise of sha512 keys is ~300 KB; tag keys are rare. 1 MiB bounds every message.
MAX_BODY_BYTES = 1024 * 1024

CLUSTER_SCOPE = "*"  # sidecar.routing.claims.CLUSTER
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


class ProtocolError(ValueError):
    """A message that does not follow the schema. `status` is the HTTP status to answer with."""

    status = 400


class BodyTooLarge(ProtocolError):
    status = 413


@dataclass(frozen=True, slots=True)
class AdvertiseRequest:
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdvertiseReply:
    stored: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class LookupRequest:
    keys: tuple[str, ...]
    claim: str | None = None  # a scope: record the asker as fetching keys nobody holds


@dataclass(frozen=True, slots=True)
class LookupReply:
    providers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fetching: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    claimed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchingRequest:
    scope: str
    renew: tuple[str, ...] = ()
    done: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FetchingReply:
    renewed: int = 0


def is_node_name(text: object) -> bool:
    return (
        isinstance(text, str) and len(text) <= MAX_NODE_NAME_LENGTH and _NODE_NAME.fullmatch(text) is not None
    )


# --- encoding (our own messages: validated by construction, checked in tests) ---


def _dump(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def encode_advertise(request: AdvertiseRequest) -> bytes:
    document: dict[str, list[str]] = {}
    if request.add:
        document["add"] = list(request.add)
    if request.remove:
        document["remove"] = list(request.remove)
    return _dump(document)


def encode_advertise_reply(reply: AdvertiseReply) -> bytes:
    return _dump({"stored": reply.stored, "refused": reply.refused})


def encode_lookup(request: LookupRequest) -> bytes:
    document: dict[str, object] = {"keys": list(request.keys)}
    if request.claim is not None:
        document["claim"] = request.claim
    return _dump(document)


def encode_lookup_reply(reply: LookupReply) -> bytes:
    document: dict[str, object] = {
        "providers": {key: list(names) for key, names in reply.providers.items()}
    }
    if reply.fetching:
        document["fetching"] = {key: list(names) for key, names in reply.fetching.items()}
    if reply.claimed:
        document["claimed"] = list(reply.claimed)
    return _dump(document)


def encode_fetching(request: FetchingRequest) -> bytes:
    document: dict[str, object] = {"scope": request.scope}
    if request.renew:
        document["renew"] = list(request.renew)
    if request.done:
        document["done"] = list(request.done)
    return _dump(document)


def encode_fetching_reply(reply: FetchingReply) -> bytes:
    return _dump({"renewed": reply.renewed})


# --- decoding (bytes from the network: trust nothing) ---


def decode_advertise(body: bytes) -> AdvertiseRequest:
    document = _load(body, "advertise request", {"add", "remove"})
    add = _keys(document.get("add", []), "add", MAX_KEYS)
    remove = _keys(document.get("remove", []), "remove", MAX_KEYS)
    if len(add) + len(remove) > MAX_KEYS:
        raise ProtocolError(
            f"advertise request: add + remove hold {len(add) + len(remove)} keys, max {MAX_KEYS}"
        )
    return AdvertiseRequest(add, remove)


def decode_advertise_reply(body: bytes) -> AdvertiseReply:
    document = _load(body, "advertise reply", {"stored", "refused"})
    return AdvertiseReply(
        _count(document.get("stored", 0), "stored"), _count(document.get("refused", 0), "refused")
    )


def decode_lookup(body: bytes) -> LookupRequest:
    document = _load(body, "lookup request", {"keys", "claim"})
    if "keys" not in document:
        raise ProtocolError("lookup request: field 'keys' is missing")
    keys = _keys(document["keys"], "keys", MAX_LOOKUP_KEYS)
    if not keys:
        raise ProtocolError("lookup request: field 'keys' is empty")
    claim = document.get("claim")
    if claim is not None:
        claim = _scope(claim, "lookup request")
    return LookupRequest(keys, claim)


def decode_lookup_reply(body: bytes) -> LookupReply:
    document = _load(body, "lookup reply", {"providers", "fetching", "claimed"})
    return LookupReply(
        _names_by_key(document.get("providers", {}), "providers"),
        _names_by_key(document.get("fetching", {}), "fetching"),
        _keys(document.get("claimed", []), "claimed", MAX_LOOKUP_KEYS),
    )


def decode_fetching(body: bytes) -> FetchingRequest:
    document = _load(body, "fetching request", {"scope", "renew", "done"})
    if "scope" not in document:
        raise ProtocolError("fetching request: field 'scope' is missing")
    renew = _keys(document.get("renew", []), "renew", MAX_KEYS)
    done = _keys(document.get("done", []), "done", MAX_KEYS)
    if len(renew) + len(done) > MAX_KEYS:
        total = len(renew) + len(done)
        raise ProtocolError(f"fetching request: renew + done hold {total} keys, max {MAX_KEYS}")
    return FetchingRequest(_scope(document["scope"], "fetching request"), renew, done)


def decode_fetching_reply(body: bytes) -> FetchingReply:
    document = _load(body, "fetching reply", {"renewed"})
    return FetchingReply(_count(document.get("renewed", 0), "renewed"))


def _scope(value: object, what: str) -> str:
    # A region label value (or "" for unlabelled nodes), or the cluster.
    if isinstance(value, str) and (value == CLUSTER_SCOPE or _LABEL_VALUE.fullmatch(value)):
        return value
    raise ProtocolError(f"{what}: field 'claim'/'scope' must be a region name or {CLUSTER_SCOPE!r}")


def _names_by_key(value: object, name: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ProtocolError(f"lookup reply: field {name!r} must be an object")
    if len(value) > MAX_LOOKUP_KEYS:
        raise ProtocolError(f"lookup reply: {len(value)} keys in {name!r}, max {MAX_LOOKUP_KEYS}")
    result: dict[str, tuple[str, ...]] = {}
    for key, names in value.items():
        if not is_index_key(key):
            raise ProtocolError(f"lookup reply: {key[:80]!r} is not a digest or tag key")
        if not isinstance(names, list) or len(names) > MAX_PROVIDERS:
            raise ProtocolError(
                f"lookup reply: {name} of a key must be a list of <= {MAX_PROVIDERS} names"
            )
        if not all(is_node_name(n) for n in names):
            raise ProtocolError(f"lookup reply: a name in {name!r} is not a valid node name")
        result[key] = tuple(names)
    return result


def _load(body: bytes, what: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ProtocolError(f"{what}: body must be bytes")
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"{what}: body of {len(body)} bytes exceeds the limit of {MAX_BODY_BYTES}")
    try:
        document = json.loads(bytes(body), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ProtocolError(f"{what}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ProtocolError(f"{what}: JSON nested too deeply") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"{what}: must be a JSON object")
    unknown = set(document) - allowed
    if unknown:
        raise ProtocolError(f"{what}: unknown field {sorted(unknown)[0][:40]!r}")
    return document


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate field")
    return document


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _keys(value: object, name: str, limit: int) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ProtocolError(f"field {name!r} must be a list of keys")
    if len(value) > limit:
        raise ProtocolError(f"field {name!r} holds {len(value)} keys, max {limit}")
    for key in value:
        if not is_index_key(key):
            shown = key[:80] if isinstance(key, str) else type(key).__name__
            raise ProtocolError(
                f"field {name!r}: {shown!r} is not a digest (sha256:<64 hex>, sha512:<128 hex>) "
                f"or a tag key <registry>/<repo>:<tag> of <= {MAX_KEY_LENGTH} characters"
            )
    return tuple(dict.fromkeys(value))  # duplicates are harmless: keep the first


def _count(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1 << 32:
        raise ProtocolError(f"field {name!r} must be a non-negative integer")
    return value
