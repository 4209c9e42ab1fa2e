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
  quarantined; when a resume mixed several providers' bytes, each of them is marked suspect instead, and
  the next try asks the body's tail sender first: its whole body shows who lied (suspicion.py).
- A tag this node does not hold is resolved by a peer that does (its tag key is in the index, as Spegel
  resolves tags): the holder answers the manifest by tag from its own store, and the body must match the
  digest it names. `latest` only with --resolve-latest (routes refuses it before).
- No provider, or none the policy allows: None at once, and the registry answers 404. Every miss is
  recorded with its `Miss` category where it is decided; a bound saying no is a limit, not "not found".
- Share while downloading (`claims`): a blob lookup also claims the blob in the claim scope (this region;
  the cluster in prefer mode with cross-region always). The claimant gets None (404, miss `claimed`): its
  containerd goes upstream, and its peers follow that download. A follower relays from in-progress
  providers with `GROWING_HEADER`, with a read stall bound of `FOLLOW_STALL` seconds. When following fails
  (the provider died, its download stalled or was abandoned), the body is cut and the digest is remembered
  for `FALLBACK_WINDOW` seconds: containerd's retry (with Range) gets a 404 and resumes upstream. A claim
  never makes a pull fail; every wait on it is bounded.
- containerd 2.1's chunked fetch of one blob (`bytes=0-`, then open-ended ranges, each hung up after its
  chunk) shares one provider stream of the whole blob (`shared_fetch`): the bytes between the nodes are
  the blob once, and the chunk that completes it waits for the whole blob's digest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from sidecar.caps.pacer import CapExceeded
from sidecar.containerd.ingest import STALL_TIMEOUT as INGEST_STALL
from sidecar.http.client import PeerClient, PeerHttpError, StreamedResponse
from sidecar.http.messages import Response, StreamBody
from sidecar.logs import get_logger, log_event
from sidecar.membership import CrossRegion, Membership, TopologyMode
from sidecar.oci import Digest, InvalidDigest, NotAManifest, load_manifest, parse_digest, tag_key
from sidecar.oci.mediatypes import MAX_MANIFEST_BYTES
from sidecar.registry.bodies import on_body_done
from sidecar.registry.crossing import CrossingGate, relay_chunks
from sidecar.registry.growing import GROWING_HEADER
from sidecar.registry.handler import LOCAL_ONLY_HEADER, Relay
from sidecar.registry.headers import blob_headers, manifest_headers
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.providers import MAX_PROVIDERS_TRIED, ProviderChoice, choose_providers
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.registry.ranges import ByteRange, Unsatisfiable, parse_range
from sidecar.registry.routes import BlobRequest, ManifestRequest
from sidecar.registry.shared_fetch import SharedFetch, SharedFetches
from sidecar.routing.claims import CLUSTER
from sidecar.routing.lookup import Found
from sidecar.routing.router import Router
from sidecar.security import Gate
from sidecar.topology.policy import RankedProvider, TopologyPolicy

log = get_logger("relay")

STALL_TIMEOUT = 10.0
FOLLOW_STALL = INGEST_STALL + 2.0  # a provider's own stall bound ends its body first; this is the node gone
FALLBACK_WINDOW = 30.0  # after following failed, this node's containerd fetches the blob upstream


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
    claims: bool = False  # share while downloading: claim blobs nobody holds (needs a lease keeper)
    fell_back: dict[str, float] = field(default_factory=dict)  # digest -> when following it failed
    counts: dict[str, int] = field(default_factory=dict)  # claims, follows, fallbacks (for the metrics)
    shared: SharedFetches = field(default_factory=SharedFetches)  # 2.1's chunked fetches, one per blob

    def claim_scope(self, membership: Membership) -> str | None:
        """Where this node's claims live: its region, or the cluster when it may follow other regions."""
        me = membership.me
        if not self.claims or me is None:
            return None
        if self.policy.mode is TopologyMode.PREFER and self.policy.cross_region is CrossRegion.ALWAYS:
            return CLUSTER  # (auto decides per blob whether crossing pays: its claims stay in the region)
        return me.region

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def fell_back_recently(self, digest: Digest) -> bool:
        when = self.fell_back.get(str(digest))
        if when is None:
            return False
        if time.monotonic() - when < FALLBACK_WINDOW:
            return True
        del self.fell_back[str(digest)]
        return False

    def give_up_following(self, digest: Digest) -> None:
        if len(self.fell_back) > 4096:
            self.fell_back.clear()
        self.fell_back[str(digest)] = time.monotonic()
        self.count("fallbacks")

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

    async def fetch_tag(self, plan: ManifestRequest, tag: str, record: PullRecord) -> Response | None:
        """Resolve `tag` on a peer that holds the image: look up its tag key in the index (the scope the
        policy allows, as for blobs), ask the best holder for the manifest by tag (it answers from its own
        store only), and check the body against the digest the holder names."""
        if not self.relays.try_enter():
            record.missed(Miss.RELAY_LIMIT, f"relay limit reached ({self.relays.capacity} at once)")
            return None
        try:
            key = tag_key(plan.registry, plan.repository, tag)
            ranked = await self._providers(key, record, plan.registry)
            if not ranked:
                return None
            target = f"/v2/{plan.repository}/manifests/{tag}?ns={plan.registry}"
            opened = await self._open(ranked, target, None, record)
            if opened is None:
                record.missed(Miss.PROVIDERS_FAILED, f"all {record.attempts} providers failed")
                return None
            provider, response = opened
            record.result, record.source = "peer", "relay"
            record.provided_by(provider.peer, provider.tier)
            try:
                digest = parse_digest(response.header("docker-content-digest") or "")
            except InvalidDigest:
                await response.abort()
                self.book.failed(provider.peer.name)
                record.missed(Miss.PROVIDERS_FAILED, f"{provider.peer.name} named no valid digest")
                return None
            return await self._manifest(provider, response, digest, record)
        finally:
            self.relays.leave()

    async def _fetch(
        self, plan: BlobRequest | ManifestRequest, digest: Digest, byte_range: str | None, record: PullRecord
    ) -> Response | None:
        is_blob = isinstance(plan, BlobRequest)
        if is_blob and self.fell_back_recently(digest):
            record.missed(Miss.FOLLOW_FAILED, "following its download failed a moment ago: go upstream")
            record.extra["claim"] = "fallback"
            return None
        if is_blob and byte_range is not None:
            joined = await self._join_shared(digest, byte_range, record)
            if joined is not None:
                return joined
        # A continuation never claims: containerd 2.1 takes a 404 for a later chunk of a body this mirror
        # began as fatal (it does not try the next host for a chunk), so it must find whoever has the blob.
        claim = is_blob and not record.continuation
        ranked = await self._providers(digest, record, plan.registry, claim=claim)
        if not ranked:
            return None
        following = record.extra.get("claim") == "follower"
        share = is_blob and _opens_a_chunked_fetch(byte_range) and self.shared.room()
        path = f"/v2/{plan.repository}/{'blobs' if is_blob else 'manifests'}/{digest}"
        target = f"{path}?ns={plan.registry}"
        waited = time.monotonic()
        opened = await self._open(ranked, target, None if share else byte_range, record, growing=following)
        if opened is None:
            if record.attempts and record.providers_busy == record.attempts:
                record.missed(Miss.UPLOAD_LIMIT, f"all {record.attempts} providers are serving their maximum")
            else:
                record.missed(Miss.PROVIDERS_FAILED, f"all {record.attempts} providers failed")
            if following:
                self.give_up_following(digest)
            return None
        if following:
            record.extra["follow_wait_ms"] = round((time.monotonic() - waited) * 1000, 2)
        provider, response = opened
        record.result, record.source = "peer", "relay"
        record.provided_by(provider.peer, provider.tier)
        if isinstance(plan, ManifestRequest):
            return await self._manifest(provider, response, digest, record)
        if share:
            return self._share(ranked, provider, response, target, digest, record, following)
        return self._blob(ranked, provider, response, target, digest, record, following)

    # -- choosing providers ------------------------------------------------------------------------

    async def _providers(
        self, key: Digest | str, record: PullRecord, registry: str, claim: bool = False
    ) -> list[RankedProvider]:
        """The providers to ask for `key` (a digest, or a tag key), best first."""
        membership = self.membership()
        me = membership.me if membership else None
        if membership is None or me is None:
            record.missed(Miss.NO_MEMBERSHIP, "membership not known yet")
            return []
        other_regions: Sequence[str] = ()
        if self.policy.mode is TopologyMode.PREFER and self.policy.cross_region.crosses:
            other_regions = [r for r in membership.regions() if r and r != me.region]
        scope = self.claim_scope(membership) if claim else None
        started = time.monotonic()
        try:
            found = await self.router.find(str(key), other_regions, claim=scope)
        except Exception as exc:  # a lookup must never turn a miss into an error
            log_event(log, "lookup_failed", logging.WARNING, key=str(key)[:120], error=str(exc))
            found = Found(())
        names = found.providers
        record.looked_up(time.monotonic() - started, len(names))
        if found.claimed:  # with holders in another region (auto), this node fetches for its region
            self.count("claims")
            record.extra["claim"] = "claimant"
        if not names and found.claimed:
            record.missed(Miss.CLAIMED, "nobody holds or fetches it: this node fetches it upstream")
            return []
        if not names and found.fetching:
            self.count("follows")
            record.extra["claim"] = "follower"
            names = found.fetching
        choice = choose_providers(
            me, names, membership, self.book.snapshot(), self.policy,
            now=time.monotonic(),
            quarantined=self.book.quarantined(),
            # A download being followed is bounded by the homes' fan-out and the provider's own gate;
            # containerd 2.1 follows one layer with many ranged requests, which this cap would refuse.
            per_peer_cap=None if record.extra.get("claim") == "follower" else self.max_per_peer,
            scope="this region" + (" or others" if other_regions else ""),
        )
        if choice.busy and self.relays.reporter is not None:
            self.relays.reporter.hit("relays_per_peer", capacity=self.max_per_peer, peers=choice.busy)
        if choice.miss is not None:
            record.missed(choice.miss, choice.reason)
        to_try = _tail_sender_first(choice, self.book.mixed.first_to_ask(str(key)))
        if self.crossing is not None and isinstance(key, Digest):  # a tag's manifest is small: no estimate
            return self.crossing.filter(to_try, registry, key, record)
        return list(to_try)

    async def _open(
        self,
        ranked: list[RankedProvider],
        target: str,
        byte_range: str | None,
        record: PullRecord,
        growing: bool = False,
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
                    tg.start_soon(self._attempt, provider, target, byte_range, record, send.clone(), growing)
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
        growing: bool = False,
    ) -> None:
        peer = provider.peer
        headers = [(LOCAL_ONLY_HEADER, "1"), *self.auth_headers()]
        if growing:
            headers.append((GROWING_HEADER, "1"))
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
                log_event(log, "peer_failed", logging.WARNING, peer=peer.name, error=str(exc))
            else:
                self.book.headers_after(time.monotonic() - started)
                if self.crossing is not None and not growing:  # a growing body waits for upstream
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
            log_event(log, "peer_marked_bad", logging.WARNING, peer=provider.peer.name, digest=digest.short,
                      reason="manifest digest mismatch")
            record.missed(Miss.PROVIDERS_FAILED,
                          f"{provider.peer.name} sent a manifest that does not match its digest")
            return None
        record.bytes = record.received_from_peer = len(data)
        return Response(200, manifest_headers(media_type, digest, len(data)), data)

    def _blob(
        self,
        ranked: list[RankedProvider],
        provider: RankedProvider,
        response: StreamedResponse,
        target: str,
        digest: Digest,
        record: PullRecord,
        following: bool = False,
    ) -> Response | None:
        size, start, length, content_range = _extent(response)
        if size is None or length is None:
            record.missed(Miss.PROVIDERS_FAILED, f"{provider.peer.name} sent no usable length")
            return None
        headers = blob_headers(digest, length, content_range or None)
        record.bytes = length
        body = _RelayBody(self, ranked, provider, response, target, digest, start, length, size, record,
                          following)
        status = 206 if content_range else 200
        return Response(status, headers, StreamBody(body.chunks(), length, body.aclose))

    # -- containerd 2.1's chunked fetches: one stream per blob (shared_fetch) ---------------------------

    def _share(
        self,
        ranked: list[RankedProvider],
        provider: RankedProvider,
        response: StreamedResponse,
        target: str,
        digest: Digest,
        record: PullRecord,
        following: bool,
    ) -> Response | None:
        """Open the shared fetch of a whole blob (verified as a whole relay is), and serve `bytes=0-`.
        Following a download shares too: one growing stream per blob, not one per chunk."""
        size, _, length, _ = _extent(response)
        if size is None or length != size:
            record.missed(Miss.PROVIDERS_FAILED, f"{provider.peer.name} sent no usable length")
            return None
        body = _RelayBody(self, ranked, provider, response, target, digest, 0, size, size, record, following)
        chunks = body.chunks()

        async def close() -> None:
            await chunks.aclose()
            await body.aclose()

        fetch = SharedFetch(str(digest), size, provider, chunks, close)
        self.shared.add(fetch)
        return _shared_response(fetch, ByteRange(0, size - 1) if size else None, record)

    async def _join_shared(self, digest: Digest, byte_range: str, record: PullRecord) -> Response | None:
        """Serve a range from the open shared fetch of `digest`, if its bytes are still to be had."""
        await self.shared.sweep()
        fetch = self.shared.fetches.get(str(digest))
        if fetch is None:
            return None
        try:
            wanted = parse_range(byte_range, fetch.size)
        except Unsatisfiable:
            return None  # the lone relay path answers it as the provider does
        if not fetch.can_serve(wanted.start if wanted else 0):
            return None
        return _shared_response(fetch, wanted, record)


def _opens_a_chunked_fetch(byte_range: str | None) -> bool:
    """containerd 2.1 begins a chunked fetch with `bytes=0-` (1.x sends no Range at first)."""
    return byte_range is not None and byte_range.replace(" ", "") == "bytes=0-"


def _shared_response(fetch: SharedFetch, wanted: ByteRange | None, record: PullRecord) -> Response:
    start, length = (wanted.start, wanted.length) if wanted else (0, fetch.size)
    record.result, record.source = "peer", "relay"
    record.provided_by(fetch.provider.peer, fetch.provider.tier)
    record.extra["shared_fetch"] = True
    record.bytes = length
    content_range = wanted.content_range(fetch.size) if wanted else None
    headers = blob_headers(fetch.digest, length, content_range)
    return Response(206 if wanted else 200, headers, StreamBody(fetch.read(start, length), length))


def _tail_sender_first(choice: ProviderChoice, first: str | None) -> tuple[RankedProvider, ...]:
    """The providers to try; after a mixed body failed its digest, its tail sender first (it can send
    the whole blob, which shows who lied: sidecar/registry/suspicion.py)."""
    if first is None:
        return choice.to_try
    ordered = sorted(choice.ranked, key=lambda provider: provider.peer.name != first)
    return tuple(ordered[:MAX_PROVIDERS_TRIED])


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
        following: bool = False,
    ) -> None:
        self.relay, self.ranked, self.provider, self.response = relay, ranked, provider, response
        self.following = following
        self.target, self.digest, self.record = target, digest, record
        self.start, self.length, self.size = start, length, size
        self.verify = start == 0 and length == size

    async def chunks(self) -> AsyncGenerator[bytes]:
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
                stall = FOLLOW_STALL if self.following else STALL_TIMEOUT
                async for chunk in relay_chunks(self.response, self.provider.tier, caps, stall):
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
                if self.relay.crossing is not None and not self.following:  # following: upstream's pace
                    self.relay.crossing.speeds.region_body(
                        self.provider.peer.region, received - before, time.monotonic() - began
                    )
                break
            except (PeerHttpError, RelayFailed, CapExceeded) as exc:
                book.failed(name)
                log_event(log, "relay_resume", logging.WARNING, peer=name, digest=self.digest.short,
                          at=self.start + received, error=str(exc))
                if self.following:
                    # Its fellow followers hang on the same download: containerd's retry goes upstream.
                    self.relay.give_up_following(self.digest)
                    self.record.extra["claim"] = "follow_failed"
                    raise RelayFailed(f"following {name}'s download of {self.digest.short} failed") from exc
                if not await self._resume(tried, self.start + received):
                    raise RelayFailed(f"no provider left to resume {self.digest.short}") from exc
            finally:
                book.ended(name)
        if hasher is not None:
            await self._check(hasher.hexdigest(), [name for name, count in sent_by.items() if count])
        if held:
            yield held

    async def _check(self, hexdigest: str, contributors: list[str]) -> None:
        """The whole blob is in: the last chunk goes out only if it matches its digest."""
        if hexdigest == self.digest.hex:
            if len(contributors) == 1:
                self._cleared(contributors[0])
            return
        self.record.extra["digest_mismatch"] = True
        self._blame(contributors)
        if self.relay.on_mismatch is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                aborted = await self.relay.on_mismatch(self.digest)
                log_event(log, "ingest_aborted", logging.WARNING, digest=self.digest.short, ingests=aborted,
                          why="containerd would resume on top of the corrupt prefix")
        raise DigestMismatch(f"{self.digest.short} from {', '.join(contributors)} does not match")

    def _blame(self, contributors: list[str]) -> None:
        """A whole blob failed its digest. Its only sender lied; among several, none is proven to."""
        book = self.relay.book
        if len(contributors) == 1:
            self._quarantine(contributors[0], "blob digest mismatch")
            return
        for name in contributors:
            book.suspect(name)
        book.mixed.record(str(self.digest), contributors)
        log_event(log, "peers_suspected", logging.WARNING, peers=contributors, digest=self.digest.short,
                  reason="blob digest mismatch across a resume: the liar is not known yet")

    def _cleared(self, sender: str) -> None:
        """`sender` alone sent the whole blob, right: a co-suspect of an earlier mixed body may be shown."""
        liar = self.relay.book.mixed.verified(str(self.digest), sender)
        if liar is not None:
            self._quarantine(liar, f"its part of a mixed body was wrong: {sender} then sent it whole, right")

    def _quarantine(self, name: str, reason: str) -> None:
        self.relay.book.failed(name, bad=True)
        log_event(log, "peer_marked_bad", logging.WARNING, peer=name, digest=self.digest.short, reason=reason)

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

