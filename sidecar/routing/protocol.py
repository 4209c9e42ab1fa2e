"""The peer protocol under `/_lokal/v1/`: message types and a strict, pure JSON codec.

Theory of operation: the HTTP layer hands the request body bytes to `decode_*`; a `ProtocolError` carries
the status to answer (400 malformed, 413 oversize) and a message naming the offending field. Nothing else
escapes a decoder, whatever the bytes (the fuzz tests hold us to that).

Endpoints and schemas (compact JSON, UTF-8, no extra fields, no duplicate fields):

  POST /_lokal/v1/advertise
    request  {"add": [key, ...], "remove": [key, ...]}        both lists optional, together <= MAX_KEYS
    reply    {"stored": int, "refused": int}                   refused > 0: the holder's bound was hit
  POST /_lokal/v1/lookup
    request  {"keys": [key, ...]}                             1..MAX_LOOKUP_KEYS keys
    reply    {"providers": {key: [node name, ...], ...}}      only keys with providers; <= MAX_PROVIDERS each

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
CONTENT_TYPE = "application/json"

MAX_KEYS = 2048  # per advertise request (add + remove); the advertiser chunks to this
MAX_LOOKUP_KEYS = 64
MAX_PROVIDERS = 64  # per key in a lookup reply; the holder picks which (same zone as the asker first)
MAX_NODE_NAME_LENGTH = 253
# Worst case of a full advertise of sha512 keys is ~300 KB; tag keys are rare. 1 MiB bounds every message.
MAX_BODY_BYTES = 1024 * 1024

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


@dataclass(frozen=True, slots=True)
class LookupReply:
    providers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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
    return _dump({"keys": list(request.keys)})


def encode_lookup_reply(reply: LookupReply) -> bytes:
    return _dump({"providers": {key: list(names) for key, names in reply.providers.items()}})


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
    document = _load(body, "lookup request", {"keys"})
    if "keys" not in document:
        raise ProtocolError("lookup request: field 'keys' is missing")
    keys = _keys(document["keys"], "keys", MAX_LOOKUP_KEYS)
    if not keys:
        raise ProtocolError("lookup request: field 'keys' is empty")
    return LookupRequest(keys)


def decode_lookup_reply(body: bytes) -> LookupReply:
    document = _load(body, "lookup reply", {"providers"})
    providers = document.get("providers", {})
    if not isinstance(providers, dict):
        raise ProtocolError("lookup reply: field 'providers' must be an object")
    if len(providers) > MAX_LOOKUP_KEYS:
        raise ProtocolError(f"lookup reply: {len(providers)} keys, max {MAX_LOOKUP_KEYS}")
    result: dict[str, tuple[str, ...]] = {}
    for key, names in providers.items():
        if not is_index_key(key):
            raise ProtocolError(f"lookup reply: {key[:80]!r} is not a digest or tag key")
        if not isinstance(names, list) or len(names) > MAX_PROVIDERS:
            raise ProtocolError(
                f"lookup reply: providers of a key must be a list of <= {MAX_PROVIDERS} names"
            )
        if not all(is_node_name(n) for n in names):
            raise ProtocolError("lookup reply: a provider is not a valid node name")
        result[key] = tuple(names)
    return LookupReply(result)


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
