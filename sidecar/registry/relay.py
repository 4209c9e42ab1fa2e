"""The relay path: fetch what the local store lacks from the best peer that holds it.

Rules:
- Providers come from the `Router` (the one-hop index) and are ordered by the topology policy; the
  policy alone decides who may be asked, so isolate mode can never cross a region here.
- Every request to a peer carries `LOCAL_ONLY_HEADER`: a peer serves from its own store or says 404.
- A provider that sends no headers within the hedge delay (adapted to observed latency) gets company: the
  next provider is asked too, and the first to answer wins.
- A body that breaks off resumes from the next provider with `Range: bytes=N-`.
- A whole blob is hashed while it streams. The last chunk is held back until the digest matches, so a
  wrong body is never complete. On a mismatch the connection is cut and containerd's ingest of that
  digest is aborted: it already holds the bad prefix, and containerd would otherwise resume on top of it
  and never commit. Only a provider that sent the whole body is shown to have lied, so only it is
  quarantined; when a resume mixed several providers' bytes, each of them is marked suspect instead.
- No provider, or none the policy allows: None at once, and the registry answers 404. Every miss is
  recorded with its `Miss` category where it is decided; a bound saying no is a limit, not "not found".
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from sidecar.caps.pacer import CapExceeded
from sidecar.http.client import PeerClient, PeerHttpError, StreamedResponse
from sidecar.http.messages import Response, StreamBody
from sidecar.logs import get_logger, log_event
from sidecar.membership import Membership, TopologyMode
from sidecar.oci import Digest, NotAManifest, load_manifest
from sidecar.oci.mediatypes import MAX_MANIFEST_BYTES
from sidecar.registry.bodies import on_body_done
from sidecar.registry.crossing import CrossingGate, relay_chunks
from sidecar.registry.handler import LOCAL_ONLY_HEADER, Relay
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.providers import choose_providers
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.registry.routes import BlobRequest, ManifestRequest
from sidecar.routing.router import Router
from sidecar.security import Gate
from sidecar.topology.policy import RankedProvider, TopologyPolicy

log = get_logger("relay")

STALL_TIMEOUT = 10.0


class DigestMismatch(Exception):
    pass


class RelayFailed(Exception):
    pass


@dataclass
class PeerRelay(Relay):
    router: Router
    membership: Callable[[], Membership | None]
    policy: TopologyPolicy
    client: PeerClient
    port: int
    book: PeerBook
    on_mismatch: Callable[[Digest], Awaitable[object]] | None = None  # Store.abort_ingests
    headers_timeout: float = 5.0
    relays: Gate = field(default_factory=lambda: Gate("relays", 64))  # --max-relays
    max_per_peer: int = 8  # --max-relays-per-peer
    auth_headers: Callable[[], list[tuple[str, str]]] = list  # the peer token, when configured
    crossing: CrossingGate | None = None  # auto, the cross-region cap, and the region speeds
    on_blob_miss: Callable[[str, Digest], None] | None = None  # UpstreamWatcher.missed

    async def fetch(
        self, plan: BlobRequest | ManifestRequest, digest: Digest, byte_range: str | None, record: PullRecord
    ) -> Response | None:
        if not self.relays.try_enter():
            record.missed(Miss.RELAY_LIMIT, f"relay limit reached ({self.relays.capacity} at once)")
            return None
        try:
            response = await self._fetch(plan, digest, byte_range, record)
        except BaseException:
            self.relays.leave()
            raise
        if response is None:
            self.relays.leave()
            if self.on_blob_miss is not None and isinstance(plan, BlobRequest) and record.method == "GET":
                self.on_blob_miss(plan.registry, digest)  # containerd goes upstream now: watch it
            return None
        return on_body_done(response, self.relays.leave)

    async def _fetch(
        self, plan: BlobRequest | ManifestRequest, digest: Digest, byte_range: str | None, record: PullRecord
    ) -> Response | None:
        ranked = await self._providers(digest, record, plan.registry)
        if not ranked:
            return None
        path = f"/v2/{plan.repository}/{'blobs' if isinstance(plan, BlobRequest) else 'manifests'}/{digest}"
        target = f"{path}?ns={plan.registry}"
        opened = await self._open(ranked, target, byte_range, record)
        if opened is None:
            if record.attempts and record.providers_busy == record.attempts:
                record.missed(Miss.UPLOAD_LIMIT, f"all {record.attempts} providers are serving their maximum")
            else:
                record.missed(Miss.PROVIDERS_FAILED, f"all {record.attempts} providers failed")
            return None
        provider, response = opened
        record.result, record.source = "peer", "relay"
        record.provided_by(provider.peer, provider.tier)
        if isinstance(plan, ManifestRequest):
            return await self._manifest(provider, response, digest, record)
        return self._blob(ranked, provider, response, target, digest, record)

    # -- choosing providers ------------------------------------------------------------------------

    async def _providers(self, digest: Digest, record: PullRecord, registry: str) -> list[RankedProvider]:
        membership = self.membership()
        me = membership.me if membership else None
        if membership is None or me is None:
            record.missed(Miss.NO_MEMBERSHIP, "membership not known yet")
            return []
        other_regions: Sequence[str] = ()
        if self.policy.mode is TopologyMode.PREFER and self.policy.cross_region.crosses:
            other_regions = [r for r in membership.regions() if r and r != me.region]
        started = time.monotonic()
        try:
            names = await self.router.lookup(str(digest), other_regions)
        except Exception as exc:  # a lookup must never turn a miss into an error
            log_event(log, "lookup_failed", level=30, digest=digest.short, error=str(exc))
            names = ()
        record.looked_up(time.monotonic() - started, len(names))
        choice = choose_providers(
            me, names, membership, self.book.snapshot(), self.policy,
            now=time.monotonic(),
            quarantined=self.book.quarantined(),
            per_peer_cap=self.max_per_peer,
            scope="this region" + (" or others" if other_regions else ""),
        )
        if choice.busy and self.relays.reporter is not None:
            self.relays.reporter.hit("relays_per_peer", capacity=self.max_per_peer, peers=choice.busy)
        if choice.miss is not None:
            record.missed(choice.miss, choice.reason)
        if self.crossing is not None:
            return self.crossing.filter(choice.to_try, registry, digest, record)
        return list(choice.to_try)

    async def _open(
        self, ranked: list[RankedProvider], target: str, byte_range: str | None, record: PullRecord
    ) -> tuple[RankedProvider, StreamedResponse] | None:
        """Ask providers in order, hedging to the next one when headers are late; first 2xx wins."""
        send, receive = anyio.create_memory_object_stream[tuple[RankedProvider, StreamedResponse | None]](
            math.inf
        )
        queue = list(ranked)
        pending = 0
        winner: tuple[RankedProvider, StreamedResponse] | None = None
        async with anyio.create_task_group() as tg:
            while winner is None and (queue or pending):
                if queue:
                    provider = queue.pop(0)
                    record.attempts += 1
                    tg.start_soon(self._attempt, provider, target, byte_range, record, send.clone())
                    pending += 1
                wait = self.book.hedge_delay() if queue else math.inf
                with anyio.move_on_after(wait):
                    provider, response = await receive.receive()
                    pending -= 1
                    if response is not None:
                        winner = (provider, response)
            tg.cancel_scope.cancel()
        send.close()
        while True:  # a late second winner: let it go
            try:
                _, late = receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            if late is not None:
                await late.abort()
        return winner

    async def _attempt(
        self,
        provider: RankedProvider,
        target: str,
        byte_range: str | None,
        record: PullRecord,
        send: MemoryObjectSendStream[tuple[RankedProvider, StreamedResponse | None]],
    ) -> None:
        peer = provider.peer
        headers = [(LOCAL_ONLY_HEADER, "1"), *self.auth_headers()]
        if byte_range:
            headers.append(("range", byte_range))
        started = time.monotonic()
        response: StreamedResponse | None = None
        with send:
            try:
                response = await self.client.get(
                    peer.address or "", self.port, target, headers,
                    connect_timeout=1.0, headers_timeout=self.headers_timeout,
                )
            except PeerHttpError as exc:
                self.book.failed(peer.name)
                log_event(log, "peer_failed", level=30, peer=peer.name, error=str(exc))
            else:
                self.book.headers_after(time.monotonic() - started)
                if self.crossing is not None:
                    self.crossing.speeds.region_first_byte(peer.region, time.monotonic() - started)
                if response.status not in (200, 206):
                    if response.status == 503:  # the provider's upload limit: a fast, honest no
                        record.providers_busy += 1
                    await response.aclose()
                    response = None  # a stale index entry (404) is not the peer's fault
            send.send_nowait((provider, response))

    # -- bodies ------------------------------------------------------------------------------------

    async def _manifest(
        self, provider: RankedProvider, response: StreamedResponse, digest: Digest, record: PullRecord
    ) -> Response | None:
        try:
            data = await response.read(MAX_MANIFEST_BYTES, stall_timeout=STALL_TIMEOUT)
            media_type, _ = load_manifest(data)
        except (PeerHttpError, NotAManifest) as exc:
            self.book.failed(provider.peer.name)
            record.missed(Miss.PROVIDERS_FAILED, f"bad manifest from {provider.peer.name}: {exc}")
            return None
        hasher = digest.hasher()
        hasher.update(data)
        if hasher.hexdigest() != digest.hex:
            self.book.failed(provider.peer.name, bad=True)
            record.extra["digest_mismatch"] = True
            log_event(log, "peer_marked_bad", level=30, peer=provider.peer.name, digest=digest.short,
                      reason="manifest digest mismatch")
            record.missed(Miss.PROVIDERS_FAILED,
                          f"{provider.peer.name} sent a manifest that does not match its digest")
            return None
        record.bytes = len(data)
        headers = [("Content-Type", media_type), ("Docker-Content-Digest", str(digest)),
                   ("Content-Length", str(len(data)))]
        return Response(200, headers, data)

    def _blob(
        self,
        ranked: list[RankedProvider],
        provider: RankedProvider,
        response: StreamedResponse,
        target: str,
        digest: Digest,
        record: PullRecord,
    ) -> Response | None:
        size, start, length, content_range = _extent(response)
        if size is None or length is None:
            record.missed(Miss.PROVIDERS_FAILED, f"{provider.peer.name} sent no usable length")
            return None
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Docker-Content-Digest", str(digest)),
            ("Accept-Ranges", "bytes"),
            ("Content-Length", str(length)),
        ]
        if content_range:
            headers.append(("Content-Range", content_range))
        record.bytes = length
        body = _RelayBody(self, ranked, provider, response, target, digest, start, length, size, record)
        status = 206 if content_range else 200
        return Response(status, headers, StreamBody(body.chunks(), length, body.aclose))


def _extent(response: StreamedResponse) -> tuple[int | None, int, int | None, str | None]:
    """(whole size, first byte, body length, Content-Range to pass on) from a provider's answer."""
    length_text = response.header("content-length")
    length = int(length_text) if length_text and length_text.isdigit() else None
    if response.status == 206:
        content_range = response.header("content-range") or ""
        try:
            span, _, total = content_range.removeprefix("bytes ").partition("/")
            first, _, _ = span.partition("-")
            return int(total), int(first), length, content_range
        except ValueError:
            return None, 0, None, None
    return length, 0, length, None


class _RelayBody:
    """The bytes of one relayed blob, across provider failures, verified when they are the whole blob."""

    def __init__(
        self,
        relay: PeerRelay,
        ranked: list[RankedProvider],
        provider: RankedProvider,
        response: StreamedResponse,
        target: str,
        digest: Digest,
        start: int,
        length: int,
        size: int,
        record: PullRecord,
    ) -> None:
        self.relay, self.ranked, self.provider, self.response = relay, ranked, provider, response
        self.target, self.digest, self.record = target, digest, record
        self.start, self.length, self.size = start, length, size
        self.verify = start == 0 and length == size

    async def chunks(self) -> AsyncIterator[bytes]:
        hasher = self.digest.hasher() if self.verify else None
        received = 0
        held = b""
        tried = {self.provider.peer.name}
        sent_by: dict[str, int] = {}  # provider -> bytes of this body it sent
        book = self.relay.book
        while True:
            name = self.provider.peer.name
            book.started(name)
            began, before = time.monotonic(), received
            try:
                caps = self.relay.crossing.caps if self.relay.crossing is not None else None
                async for chunk in relay_chunks(self.response, self.provider.tier, caps, STALL_TIMEOUT):
                    if received + len(chunk) > self.length:
                        raise RelayFailed(f"{name} sent more than {self.length} bytes")
                    received += len(chunk)
                    sent_by[name] = sent_by.get(name, 0) + len(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    if held:
                        yield held
                    held = chunk
                if received < self.length:
                    raise RelayFailed(f"{name} ended the body at {received} of {self.length}")
                book.transferred(name, received - before, time.monotonic() - began)
                if self.relay.crossing is not None:
                    self.relay.crossing.speeds.region_body(
                        self.provider.peer.region, received - before, time.monotonic() - began
                    )
                break
            except (PeerHttpError, RelayFailed, CapExceeded) as exc:
                book.failed(name)
                log_event(log, "relay_resume", level=30, peer=name, digest=self.digest.short,
                          at=self.start + received, error=str(exc))
                if not await self._resume(tried, self.start + received):
                    raise RelayFailed(f"no provider left to resume {self.digest.short}") from exc
            finally:
                book.ended(name)
        if hasher is not None and hasher.hexdigest() != self.digest.hex:
            self.record.extra["digest_mismatch"] = True
            self._blame([name for name, count in sent_by.items() if count])
            if self.relay.on_mismatch is not None:
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    aborted = await self.relay.on_mismatch(self.digest)
                    log_event(log, "ingest_aborted", level=30, digest=self.digest.short, ingests=aborted,
                              why="containerd would resume on top of the corrupt prefix")
            raise DigestMismatch(f"{self.digest.short} from {', '.join(sent_by)} does not match")
        if held:
            yield held

    def _blame(self, contributors: list[str]) -> None:
        """A whole blob failed its digest. Its only sender lied; among several, none is proven to."""
        book = self.relay.book
        if len(contributors) == 1:
            book.failed(contributors[0], bad=True)
            log_event(log, "peer_marked_bad", level=30, peer=contributors[0], digest=self.digest.short,
                      reason="blob digest mismatch")
            return
        for name in contributors:
            book.suspect(name)
        log_event(log, "peers_suspected", level=30, peers=contributors, digest=self.digest.short,
                  reason="blob digest mismatch across a resume: the liar is not known")

    async def _resume(self, tried: set[str], offset: int) -> bool:
        for candidate in self.ranked:
            if candidate.peer.name in tried:
                continue
            tried.add(candidate.peer.name)
            self.record.attempts += 1
            opened = await self.relay._open([candidate], self.target, f"bytes={offset}-", self.record)
            if opened is None:
                continue
            _, response = opened
            size, first, _, _ = _extent(response)
            if response.status != 206 or first != offset or size != self.size:
                await response.abort()
                continue
            self.provider, self.response = candidate, response
            self.record.provided_by(candidate.peer, candidate.tier)
            return True
        return False

    async def aclose(self) -> None:
        await self.response.aclose()

