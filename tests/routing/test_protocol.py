"""The /_lokal/v1/ codec: round trips, and only ProtocolError (400) or BodyTooLarge (413) on bad bytes."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.routing import AdvertiseRequest, BodyTooLarge, LookupReply, LookupRequest, ProtocolError
from sidecar.routing import protocol as p
from sidecar.routing.keys import is_index_key
from tests.routing.cluster import digest

A = digest("a")
SHA512 = "sha512:" + "ab" * 64
TAG = "registry.example:5000/team/app:v1.2"

DECODERS = [p.decode_advertise, p.decode_advertise_reply, p.decode_lookup, p.decode_lookup_reply]


def test_messages_round_trip_through_compact_json() -> None:
    request = AdvertiseRequest((A, SHA512, TAG), (digest("b"),))
    body = p.encode_advertise(request)
    assert b" " not in body
    assert p.decode_advertise(body) == request
    assert p.decode_lookup(p.encode_lookup(LookupRequest((A,)))) == LookupRequest((A,))
    reply = LookupReply({A: ("node-1", "node-2.example")})
    assert p.decode_lookup_reply(p.encode_lookup_reply(reply)) == reply
    assert p.decode_advertise_reply(p.encode_advertise_reply(p.AdvertiseReply(3, 1))) == p.AdvertiseReply(
        3, 1
    )


@pytest.mark.parametrize(
    "key",
    ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 32, "", "../etc/passwd", "x" * 700, " " + A],
)
def test_keys_outside_the_digest_and_tag_grammar_are_refused(key: str) -> None:
    assert not is_index_key(key)
    with pytest.raises(ProtocolError, match="add") as error:
        p.decode_advertise(json.dumps({"add": [key]}).encode())
    assert error.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"keys": "sha256:00"}',
        b'{"keys": []}',
        b'{"keys": [1]}',
        b'{"keys": [null]}',
        b'{"add": {}}',
        b'{"add": [], "add": []}',
        b'{"add": [], "who": "node-1"}',
        b'{"keys": [NaN]}',
        b"\xff\xfe{}",
        b'{"keys": ["sha256:' + b"0" * 64 + b'"',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_malformed_requests_get_a_400_error_naming_the_problem(body: bytes) -> None:
    for decode in (p.decode_advertise, p.decode_lookup):
        with pytest.raises(ProtocolError) as error:
            decode(body)
        assert error.value.status == 400
        assert str(error.value)


def test_an_oversize_body_gets_413_before_parsing() -> None:
    body = b'{"add": [' + b" " * p.MAX_BODY_BYTES + b"]}"
    for decode in DECODERS:
        with pytest.raises(BodyTooLarge) as error:
            decode(body)
        assert error.value.status == 413


def test_too_many_keys_is_a_400_naming_the_limit() -> None:
    keys = [digest(str(i)) for i in range(p.MAX_KEYS + 1)]
    with pytest.raises(ProtocolError, match=str(p.MAX_KEYS)):
        p.decode_advertise(json.dumps({"add": keys}).encode())
    with pytest.raises(ProtocolError, match=str(p.MAX_LOOKUP_KEYS)):
        p.decode_lookup(json.dumps({"keys": keys[: p.MAX_LOOKUP_KEYS + 1]}).encode())


def test_a_lookup_reply_with_a_bad_node_name_is_refused() -> None:
    with pytest.raises(ProtocolError, match="node name"):
        p.decode_lookup_reply(json.dumps({"providers": {A: ["Not A Node"]}}).encode())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(document=json_values)
def test_any_json_document_decodes_or_raises_only_protocol_error(document: object) -> None:
    body = json.dumps(document).encode()
    for decode in DECODERS:
        with contextlib.suppress(ProtocolError):
            decode(body)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300))
def test_any_bytes_decode_or_raise_only_protocol_error(body: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(ProtocolError):
            decode(body)


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=200))
def test_truncated_messages_are_a_400(cut: int) -> None:
    body = p.encode_advertise(AdvertiseRequest((A, SHA512, TAG)))
    truncated = body[: min(cut, len(body) - 1)]
    with pytest.raises(ProtocolError):
        p.decode_advertise(truncated)


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.sampled_from([A, SHA512, TAG, digest("b")]), max_size=10),
    junk=st.sampled_from([1, 1.5, True, None, [], {}, "sha256:zz"]),
    position=st.integers(min_value=0, max_value=10),
)
def test_one_wrongly_typed_key_anywhere_fails_the_whole_request(
    keys: list[str], junk: object, position: int
) -> None:
    mixed: list[object] = list(keys)
    mixed.insert(min(position, len(mixed)), junk)
    with pytest.raises(ProtocolError):
        p.decode_advertise(json.dumps({"add": mixed}).encode())
