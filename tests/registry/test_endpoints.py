"""The OCI endpoints against a running server (real sockets) over the memory store."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.containerd import MemoryStore
from sidecar.http import HttpServer, ServerLimits
from sidecar.oci import digest_of
from sidecar.registry import RegistryHandler, Relay, RouteConfig

pytestmark = pytest.mark.anyio

NS = "registry.example"
INDEX = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": []}).encode()
LAYER = bytes(range(256)) * 4000


class Served:
    def __init__(self, port: int, store: MemoryStore, handler: RegistryHandler) -> None:
        self.port = port
        self.store = store
        self.handler = handler

    async def raw(self, request: bytes) -> bytes:
        """Send raw bytes, read until the server closes or 2 s pass."""
        async with await anyio.connect_tcp("127.0.0.1", self.port) as stream:
            await stream.send(request)
            data = b""
            with anyio.move_on_after(2):
                while True:
                    try:
                        data += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
            return data

    async def get(self, method: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "Host: lokal", "Connection: close"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        raw = await self.raw(("\r\n".join(lines) + "\r\n\r\n").encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        return int(status_line.split()[1]), parsed, body


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    store = MemoryStore()
    index_digest = store.add_blob(INDEX)
    store.add_blob(LAYER)
    await store.set_image(f"{NS}/app:v1", index_digest)
    await store.set_image(f"{NS}/app:latest", index_digest)
    routes = RouteConfig(mirrored_registries=(NS,), resolve_tags=True)
    handler = RegistryHandler(store, routes, Relay())
    server = HttpServer(handler, ServerLimits(header_timeout=2))
    async with anyio.create_task_group() as tg:
        _, port = await tg.start(server.serve, ("127.0.0.1", 0))
        yield Served(port, store, handler)
        await server.shutdown()


async def test_ping_answers_with_the_api_version_header(served: Served) -> None:
    status, headers, _ = await served.get("GET", "/v2/")
    assert status == 200 and headers["docker-distribution-api-version"] == "registry/2.0"


async def test_head_and_get_of_a_blob_carry_the_same_headers(served: Served) -> None:
    path = f"/v2/app/blobs/{digest_of(LAYER)}?ns={NS}"
    get_status, get_headers, body = await served.get("GET", path)
    head_status, head_headers, head_body = await served.get("HEAD", path)
    assert get_status == head_status == 200
    assert body == LAYER and head_body == b""
    for name in ("content-length", "docker-content-digest", "content-type", "accept-ranges"):
        assert get_headers[name] == head_headers[name]
    assert get_headers["content-length"] == str(len(LAYER))
    assert get_headers["docker-content-digest"] == str(digest_of(LAYER))


async def test_a_manifest_by_tag_and_by_digest_has_its_exact_media_type(served: Served) -> None:
    for reference in ("v1", str(digest_of(INDEX))):
        for method in ("GET", "HEAD"):
            status, headers, body = await served.get(method, f"/v2/app/manifests/{reference}?ns={NS}")
            assert status == 200
            assert headers["content-type"] == "application/vnd.oci.image.index.v1+json"
            assert headers["docker-content-digest"] == str(digest_of(INDEX))
            assert headers["content-length"] == str(len(INDEX))
            assert body == (INDEX if method == "GET" else b"")


async def test_latest_is_not_resolved_by_default(served: Served) -> None:
    status, _, body = await served.get("GET", f"/v2/app/manifests/latest?ns={NS}")
    assert status == 404 and json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "start", "end"),
    [
        ("bytes=0-99", 206, "bytes 0-99/1024000", 0, 100),
        ("bytes=1000000-", 206, "bytes 1000000-1023999/1024000", 1000000, 1024000),
        ("bytes=-24", 206, "bytes 1023976-1023999/1024000", 1023976, 1024000),
        ("bytes=1023990-2000000", 206, "bytes 1023990-1023999/1024000", 1023990, 1024000),
        ("bytes=0-1,5-9", 200, None, 0, 1024000),
    ],
)
async def test_a_single_range_gets_206_with_the_right_bytes(
    served: Served, range_header: str, status: int, content_range: str | None, start: int, end: int
) -> None:
    got_status, headers, body = await served.get(
        "GET", f"/v2/app/blobs/{digest_of(LAYER)}?ns={NS}", Range=range_header
    )
    assert got_status == status
    assert headers.get("content-range") == content_range
    assert body == LAYER[start:end]


async def test_an_unsatisfiable_range_gets_416(served: Served) -> None:
    path = f"/v2/app/blobs/{digest_of(LAYER)}?ns={NS}"
    status, headers, _ = await served.get("GET", path, Range="bytes=2000000-")
    assert status == 416 and headers["content-range"] == f"bytes */{len(LAYER)}"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", f"/v2/app/blobs/{digest_of(b'nobody')}?ns={NS}", 404, "BLOB_UNKNOWN"),
        ("GET", f"/v2/app/manifests/{digest_of(b'nobody')}?ns={NS}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/app/blobs/sha256:abc?ns={NS}", 404, "BLOB_UNKNOWN"),
        ("GET", f"/v2/app/blobs/sha256:{'A' * 64}?ns={NS}", 404, "BLOB_UNKNOWN"),
        ("GET", f"/v2/app/manifests/.INVALID_MANIFEST_NAME?ns={NS}", 404, "MANIFEST_UNKNOWN"),
        ("HEAD", f"/v2/app/manifests/-v1?ns={NS}", 404, None),
        ("GET", f"/v2/app/manifests/sha256:abc?ns={NS}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/app/manifests/{'t' * 129}?ns={NS}", 404, "MANIFEST_UNKNOWN"),
        ("GET", f"/v2/../../etc/blobs/{digest_of(LAYER)}?ns={NS}", 400, "NAME_INVALID"),
        ("GET", f"/v2/a/%2e%2e/blobs/{digest_of(LAYER)}?ns={NS}", 400, "NAME_INVALID"),
        ("GET", f"/v2/app/blobs/{digest_of(LAYER)}?ns=not.mirrored.io", 404, "NAME_UNKNOWN"),
        ("PUT", f"/v2/app/blobs/uploads/?ns={NS}", 405, "UNSUPPORTED"),
        ("DELETE", f"/v2/app/manifests/v1?ns={NS}", 405, "UNSUPPORTED"),
    ],
)
async def test_errors_have_the_oci_body_and_containerds_status(
    served: Served, method: str, path: str, status: int, code: str | None
) -> None:
    got_status, headers, body = await served.get(method, path)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    if code is not None:  # HEAD has no body
        assert json.loads(body)["errors"][0]["code"] == code
        assert SPEC_STATUS[code] == status  # the code and the status agree, as the distribution spec has it


# The HTTP status the distribution spec pairs with each error code lokal sends (405 for UNSUPPORTED:
# distribution's own pairing, for methods a pull-only mirror does not support).
SPEC_STATUS = {"BLOB_UNKNOWN": 404, "MANIFEST_UNKNOWN": 404, "NAME_UNKNOWN": 404, "NAME_INVALID": 400,
               "DIGEST_INVALID": 400, "UNSUPPORTED": 405, "DENIED": 403, "RANGE_INVALID": 416}


REFUSED = [
    ("GET", "/v2/app/manifests/v1?ns=not.mirrored.io", "not_mirrored"),
    ("GET", "/v2/app/manifests/v1", "no_ns"),  # docker.io is the default, and it is not mirrored here
    ("GET", f"/v2/app/manifests/latest?ns={NS}", "latest"),
    ("PUT", f"/v2/app/manifests/v1?ns={NS}", "write"),
    ("POST", f"/v2/app/blobs/uploads/?ns={NS}", "write"),
    ("GET", f"/v2/../../etc/blobs/{digest_of(LAYER)}?ns={NS}", "bad_name"),
    ("GET", f"/v2/a/%2e%2e/manifests/v1?ns={NS}", "bad_name"),
    ("GET", f"/v2/app/manifests/.INVALID_MANIFEST_NAME?ns={NS}", "bad_reference"),
]


async def test_each_refused_request_is_counted_and_logged_at_most_once_per_interval_per_kind(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lokal")
    for _ in range(3):
        for method, path, _ in REFUSED:
            assert 400 <= (await served.get(method, path))[0] < 500
    kinds = [kind for _, _, kind in REFUSED]
    assert served.handler.refusals.totals == {kind: 3 * kinds.count(kind) for kind in kinds}
    lines = [r.lokal_fields for r in caplog.records if r.getMessage() == "refused"]  # type: ignore[attr-defined]
    assert sorted(line["kind"] for line in lines) == sorted(set(kinds))  # rate-limited: one per kind
    no_ns = next(line for line in lines if line["kind"] == "no_ns")
    assert (no_ns["method"], no_ns["path"], no_ns["client"], no_ns["count"]) == (
        "GET", "/v2/app/manifests/v1", "127.0.0.1", 1)
    assert "docker.io" in no_ns["reason"] and no_ns["status"] == 404


async def test_keep_alive_serves_a_manifest_after_a_sendfile_body(served: Served) -> None:
    blob = f"GET /v2/app/blobs/{digest_of(LAYER)}?ns={NS} HTTP/1.1\r\nHost: x\r\n\r\n"
    manifest = f"GET /v2/app/manifests/v1?ns={NS} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = await served.raw((blob + manifest).encode())
    assert raw.count(b"HTTP/1.1 200") == 2
    assert raw.endswith(INDEX)


async def test_healthz_and_readyz(served: Served) -> None:
    assert (await served.get("GET", "/healthz"))[0] == 200
    status, _, body = await served.get("GET", "/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    served.store.available = False
    assert (await served.get("GET", "/readyz"))[0] in (200, 503)


_path_chars = st.text(alphabet=st.sampled_from("abc/.%:_-~sha256ABC0123456789?&=@\\ "), max_size=120)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=_path_chars, method=st.sampled_from(["GET", "HEAD", "POST", "PATCH", "OPTIONS"]))
async def test_random_paths_always_get_a_well_formed_answer_and_never_a_5xx(
    served: Served, path: str, method: str
) -> None:
    target = "/v2/" + path.replace(" ", "%20")
    raw = await served.raw(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert raw.startswith(b"HTTP/1.1 "), raw[:100]
    status = int(raw.split()[1])
    assert 200 <= status < 500
    # the server is still up
    with socket.create_connection(("127.0.0.1", served.port), timeout=2):
        pass
