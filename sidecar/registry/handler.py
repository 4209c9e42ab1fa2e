"""The registry endpoint: OCI distribution pull requests answered from the local store (and, through the
`Relay` seam, from peers), plus /healthz, /readyz and the peer protocol's mount point.

Rules:
- All request text goes through `routes.plan_request` first; nothing here parses paths.
- A miss is a fast 404 with the OCI error body; containerd then tries the next host.
- HEAD answers carry exactly GET's headers (the server drops the body and releases it).
- A request carrying `LOCAL_ONLY_HEADER` (sent by peers) is served from this node's store or not at all,
  so that requests can never loop between nodes. With `GROWING_HEADER` too, a blob this node is still
  downloading is served from containerd's growing ingest (`growing.py`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.caps.pacer import Cap, paced_response
from sidecar.containerd import FileBlob, OpenBlob, Store, StoreUnavailable
from sidecar.http.messages import FileBody, Request, Response, StreamBody
from sidecar.oci import Digest, ErrorCode, oci_error
from sidecar.registry.bodies import on_body_done
from sidecar.registry.growing import GROWING_HEADER, Committed, GrowingSource
from sidecar.registry.headers import blob_headers, manifest_headers
from sidecar.registry.pulls import Miss, PullObserver, PullRecord
from sidecar.registry.ranges import ByteRange, Unsatisfiable, continues_a_body, parse_range
from sidecar.registry.refusals import RefusalLog
from sidecar.registry.routes import (
    BlobRequest,
    Health,
    ManifestRequest,
    OperatorCall,
    PeerCall,
    Ping,
    Refusal,
    RefusalKind,
    RouteConfig,
    plan_request,
    query_of,
)
from sidecar.security import TOKEN_HEADER, Gate
from sidecar.topology.admission import is_loopback

LOCAL_ONLY_HEADER = "x-lokal-local-only"
JSON = "application/json"
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

PeerHandler = Callable[[Request, str], Awaitable[Response]]
# /metrics and /_lokal/debug/ (sidecar/debug): called only for clients `admit` lets in.
OperatorHandler = Callable[[Request, OperatorCall], Awaitable[Response]]
ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, object]]]]
# Who may pull: the client's address -> (allowed, reason).
Admission = Callable[[str], tuple[bool, str]]


class Relay:
    """The seam to peers: fetch what the local store lacks. This one relays nothing, and says why."""

    why = Miss.NO_DISCOVERY
    reason = "no peer discovery (--discovery none)"

    async def fetch(
        self, plan: BlobRequest | ManifestRequest, digest: Digest, byte_range: str | None, record: PullRecord
    ) -> Response | None:
        record.missed(self.why, self.reason)
        return None

    async def fetch_tag(self, plan: ManifestRequest, tag: str, record: PullRecord) -> Response | None:
        """The manifest `tag` names on a peer that holds the image (this node does not)."""
        record.missed(self.why, self.reason)
        return None


class PeersNotKnownYet(Relay):
    """Discovery is on, but the first Node list has not arrived: the Kubernetes API is unreachable or slow.
    The node serves from its own store meanwhile; the peer relay replaces this one after that list."""

    why = Miss.NO_MEMBERSHIP
    reason = "peers not known yet: the Kubernetes API has not answered this node's first Node list"


@dataclass
class RegistryHandler:
    store: Store
    routes: RouteConfig
    relay: Relay
    peer_handler: PeerHandler | None = None
    readiness: ReadinessCheck | None = None
    admit: Admission | None = None
    operator_handler: OperatorHandler | None = None
    pull_observer: PullObserver | None = None  # metrics: sees every finished PullRecord
    peer_auth: Callable[[str | None], bool] | None = None  # --peer-token-file: the token check
    uploads: Gate | None = None  # concurrent bodies served to peers
    refusals: RefusalLog = field(default_factory=RefusalLog)  # logged (rate-limited) and counted
    upload_cap: Cap | None = None  # --cap-to-peers: bytes/s served to peers
    growing: GrowingSource | None = None  # serves peers from a download still in progress

    def _authenticated(self, request: Request) -> bool:
        """Peers must present the shared token when one is configured; containerd (loopback) never does."""
        if self.peer_auth is None or is_loopback(request.client[0]):
            return True
        return self.peer_auth(request.header(TOKEN_HEADER))

    async def __call__(self, request: Request) -> Response:
        plan = plan_request(request.method, request.path, query_of(request.query_string), self.routes)
        if isinstance(plan, Refusal):
            return self._refuse(request, plan)
        if isinstance(plan, Ping):
            return Response(200, [API_VERSION, ("Content-Type", JSON)], b"{}")
        if isinstance(plan, Health):
            return await self._health(plan)
        if not self._authenticated(request):
            return self._refuse(request, Refusal(403, ErrorCode.DENIED, "missing or wrong peer token",
                                                 RefusalKind.PEER_TOKEN))
        if isinstance(plan, PeerCall):
            if self.peer_handler is None:
                return oci_error(404, ErrorCode.UNSUPPORTED,
                                 "peer protocol is off here (--discovery none, or peers not known yet)")
            return await self.peer_handler(request, plan.path)
        if self.admit is not None:
            allowed, reason = self.admit(request.client[0])
            if not allowed:
                return self._refuse(request, Refusal(403, ErrorCode.DENIED, reason, RefusalKind.NOT_ADMITTED))
        if isinstance(plan, OperatorCall):
            if self.operator_handler is None:
                return oci_error(404, ErrorCode.UNSUPPORTED, "no metrics or debug endpoint here")
            return await self.operator_handler(request, plan)
        return await self._pull(request, plan)

    def _refuse(self, request: Request, refusal: Refusal) -> Response:
        self.refusals.refused(refusal.kind, status=refusal.status, client=request.client[0],
                              method=request.method, path=request.path, message=refusal.message)
        return oci_error(refusal.status, refusal.code, refusal.message)

    async def _health(self, plan: Health) -> Response:
        if plan.kind == "healthz":
            return Response(200, [("Content-Type", "text/plain")], b"ok\n")
        ready, details = (True, {}) if self.readiness is None else await self.readiness()
        body = json.dumps({"ready": ready, **details}, separators=(",", ":")).encode()
        return Response(200 if ready else 503, [("Content-Type", JSON)], body)

    async def _pull(self, request: Request, plan: BlobRequest | ManifestRequest) -> Response:
        kind = "blob" if isinstance(plan, BlobRequest) else "manifest"
        reference = plan.digest if isinstance(plan, BlobRequest) else plan.reference
        record = PullRecord(
            kind=kind,
            method=request.method,
            repo=plan.repository,
            ns=plan.registry,
            digest=reference.short if isinstance(reference, Digest) else f"tag:{reference}",
            client=request.client[0],
            observer=self.pull_observer,
        )
        local_only = request.header(LOCAL_ONLY_HEADER) is not None
        record.for_peer = local_only
        record.continuation = continues_a_body(request.header("range"))
        gate = self.uploads if local_only and request.method == "GET" else None
        capped = self.upload_cap if gate is not None else None
        if capped is not None and not capped.admits():
            record.missed(Miss.CAPPED, "upload cap reached (its backlog is too long)")
            record.status = 503
            record.finish()
            return oci_error(503, ErrorCode.UNSUPPORTED, "this node is at its upload cap")
        if gate is not None and not gate.try_enter(client=request.client[0]):
            # A fast refusal: the asking peer tries its next provider at once.
            record.missed(Miss.UPLOAD_LIMIT, "upload limit reached")
            record.status = 503
            record.finish()
            return oci_error(503, ErrorCode.UNSUPPORTED, "this node is serving its maximum of peers")
        try:
            response = await self._serve(request, plan, record, local_only)
        except StoreUnavailable as exc:
            record.missed(Miss.CONTAINERD, f"containerd unavailable: {exc}")
            response = None
        except BaseException:
            if gate is not None:
                gate.leave()
            raise
        if gate is not None:  # the slot is held until the body has been sent
            if response is None:
                gate.leave()
            else:
                response = on_body_done(response, gate.leave)
                if capped is not None:
                    response = paced_response(response, capped)
        if response is None:
            code = ErrorCode.BLOB_UNKNOWN if kind == "blob" else ErrorCode.MANIFEST_UNKNOWN
            response = oci_error(404, code, record.reason or "not found on this node")
            record.reason = record.reason or ("not held locally" if local_only else "not found")
        record.status = response.status
        record.responded()
        return _finishing(response, record)

    async def _serve(
        self, request: Request, plan: BlobRequest | ManifestRequest, record: PullRecord, local_only: bool
    ) -> Response | None:
        if isinstance(plan, ManifestRequest):
            digest = plan.reference
            if not isinstance(digest, Digest):
                resolved = await self.store.resolve_tag(plan.registry, plan.repository, digest.value)
                if resolved is None:
                    if local_only:  # a peer asks what this node's own store says, never a third node
                        record.missed(Miss.NOT_FOUND, "tag not held locally")
                        return None
                    # Resolved by a peer that holds the image, as Spegel does: a pull of an image the
                    # cluster already has survives an upstream outage. (`latest` only with
                    # --resolve-latest: routes refuses it before this.)
                    return await self.relay.fetch_tag(plan, digest.value, record)
                digest = resolved
            manifest = await self.store.read_manifest(digest)
            if manifest is not None:
                record.result, record.tier, record.source = "local", "same_node", "file"
                record.bytes = len(manifest.data)
                return Response(200, manifest_headers(manifest.media_type, digest, len(manifest.data)),
                                manifest.data)
            if local_only:
                return None
            return await self.relay.fetch(plan, digest, None, record)

        blob = await self.store.open_blob(plan.digest)
        if blob is None and local_only and self.growing is not None and request.header(GROWING_HEADER):
            growing = await self.growing.serve(plan.digest, request.header("range"), record)
            if not isinstance(growing, Committed):
                return growing
            blob = await self.growing.committed_blob(self.store, plan.digest)
        if blob is None:
            if local_only:
                return None
            return await self.relay.fetch(plan, plan.digest, request.header("range"), record)
        try:
            byte_range = parse_range(request.header("range"), blob.size)
        except Unsatisfiable:
            blob.close()
            record.missed(Miss.RANGE, "range not satisfiable")
            return oci_error(416, ErrorCode.RANGE_INVALID, "range not satisfiable",
                             [("Content-Range", f"bytes */{blob.size}")])
        record.result, record.tier, record.source = "local", "same_node", blob.source
        return _blob_response(plan.digest, blob, byte_range, record)


def _blob_response(
    digest: Digest, blob: OpenBlob, byte_range: ByteRange | None, record: PullRecord
) -> Response:
    size = blob.size
    start, length = (byte_range.start, byte_range.length) if byte_range else (0, size)
    status = 206 if byte_range is not None else 200
    headers = blob_headers(digest, length, byte_range.content_range(size) if byte_range else None)
    record.bytes = length
    if isinstance(blob, FileBlob):
        return Response(status, headers, FileBody(blob.fd, start, length, blob.close))
    return Response(status, headers, StreamBody(blob.read(start, length), length))


def _finishing(response: Response, record: PullRecord) -> Response:
    """Finish `record` when the response body is done, so the log line carries the whole transfer's
    duration and the bytes the client really received (the server's count: a client that hangs up
    after a chunk of an open-ended range is charged for that chunk, not for the remainder it was
    promised). Bodies that are plain bytes finish now."""
    if not isinstance(response.body, (FileBody, StreamBody)):
        record.finish()
        return response

    def done() -> None:
        if response.sent is not None:
            record.bytes = response.sent
        record.finish(ok=not response.body_failed)

    return on_body_done(response, done)



