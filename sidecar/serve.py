"""The composition root of `lokal serve`: build the node once, in dependency order, run it until SIGTERM,
then drain in-flight responses (bounded) and exit.

Order (each part gets its collaborators when it is made; nothing is patched afterwards):
  1. the store, started (its index read, or containerd found away: 404s meanwhile);
  2. the membership feed, started (the first membership: this node's name, address, region and zone);
  3. the peer client, connecting from this node's own address (peers know a node by its source address);
  4. the index (holder service, then the router that uses it in-process) and the relay;
  5. observability (metrics, pull observer, operator endpoint);
  6. the registry handler and the HTTP server, listening;
  7. the supervised advertiser, the router's upkeep and the membership follower.

Rules:
- `running_node` is the one builder: `lokal serve` and the tests use it; tests pass in-memory parts
  (`store`, `membership`, `router`) where they need them.
- Startup logs one `config` line with the effective settings; nothing secret is in it.
- A configuration problem found while starting (a busy `--listen`, a bad token file, a node label the
  topology mode needs) is one line naming the setting, exit code 2. Anything else keeps its traceback.
- Exit is bounded: once stopped, the process ends without waiting on library threads (grpc's poller can
  block interpreter exit), so SIGTERM never needs a SIGKILL behind it.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import TaskGroup, TaskStatus

from sidecar.caps.pacer import TierCaps
from sidecar.cluster import ClusterConfig, ClusterConfigError, MembershipSource
from sidecar.cluster.feed import FixedMembership, MembershipFeed
from sidecar.containerd import ConfigError, ContainerdStore, Store, check_socket_setting
from sidecar.containerd.ingest import IngestProbe
from sidecar.containerd.upstream_watch import UpstreamWatcher, ingest_size
from sidecar.debug import Observability, observe, start_observability
from sidecar.debug.status import all_warnings
from sidecar.hosts.settings import DEFAULT_REGISTRY_DIR, SettingError
from sidecar.http import HttpServer, ServerLimits
from sidecar.http.client import PeerClient
from sidecar.logs import get_logger, log_event
from sidecar.membership import Membership, Peer, TopologyLabels
from sidecar.metrics import Metrics
from sidecar.oci import Digest
from sidecar.registry import RegistryHandler, Relay, RouteConfig
from sidecar.registry.crossing import CrossingGate
from sidecar.registry.growing import GrowingSource
from sidecar.registry.handler import Admission, ReadinessCheck
from sidecar.registry.peering import Peering
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.refusals import RefusalLog
from sidecar.registry.relay import PeerRelay
from sidecar.registry.speeds import SpeedBook
from sidecar.routing.http_endpoint import peer_endpoint
from sidecar.routing.http_transport import HttpPeerTransport, LocalIndex
from sidecar.routing.router import OneHopRouter, Router, RoutingSettings, index_service
from sidecar.security import Gate, LimitReporter, PeerTokens
from sidecar.security.tokens import TokenFileError
from sidecar.settings import Discovery, ServeSettings, as_log_fields
from sidecar.topology.admission import admit_request
from sidecar.topology.policy import TopologyPolicy
from sidecar.topology.validation import policy_warnings

log = get_logger("serve")

# Errors that are the operator's to fix: reported as one line, exit code 2.
CONFIG_ERRORS = (SettingError, ConfigError, ClusterConfigError, TokenFileError)


class StartupError(Exception):
    """A setting that cannot work on this node, found while starting; `str()` names the setting."""


@dataclass
class NodeParts:
    """What the operator's view reads (`sidecar.debug.NodeView`): made before the handler that serves it."""

    settings: ServeSettings
    store: Store
    policy: TopologyPolicy
    membership: MembershipFeed
    peering: Peering  # the relay and the router, once the first membership is known
    book: PeerBook
    limits: LimitReporter
    speeds: SpeedBook  # upstream and region estimates (--cross-region auto)
    caps: TierCaps
    crossing: CrossingGate
    config_warnings: list[str]  # containerd's configuration, checked once it answers
    # How that check went, in words: where the settings were read, or why they could not be (status shows
    # it). A list changed in place, as config_warnings: the Node and the view built from its parts share it.
    config_check: list[str] = field(default_factory=lambda: ["not yet checked"], kw_only=True)

    @property
    def router(self) -> Router | None:
        return self.peering.router

    @property
    def relay(self) -> Relay:
        return self.peering.relay

    def current_membership(self) -> Membership | None:
        return self.membership.current


@dataclass
class Node(NodeParts):
    """One running lokal: what `lokal status`, the tests and the lab inspect."""

    handler: RegistryHandler
    server: HttpServer
    observability: Observability
    tokens: PeerTokens | None = None
    upstream_watch: UpstreamWatcher | None = None
    advertiser: Advertising | None = None  # once peering is connected


def membership_feed(settings: ServeSettings) -> MembershipFeed:
    if settings.discovery is Discovery.NONE:
        # Single-node mode: no peers, so only loopback (or, if allowed, anyone) may pull.
        return FixedMembership(Membership.of(settings.node_name or "local", []))
    return MembershipSource(
        ClusterConfig(
            node_name=settings.node_name or "",
            kubeconfig=Path(settings.kubeconfig) if settings.kubeconfig else None,
            topology_mode=settings.topology_mode,
            address_family="ipv6" if ":" in settings.listen[0] else "ipv4",
            labels=TopologyLabels(settings.region_label, settings.zone_label),
        )
    )


def containerd_store(settings: ServeSettings) -> Store:
    return ContainerdStore(
        settings.containerd_socket,
        namespace=settings.containerd_namespace,
        content_root=settings.content_root,
    )


RouterFactory = Callable[[Membership], Router]


@asynccontextmanager
async def running_node(
    settings: ServeSettings,
    *,
    store: Store | None = None,
    membership: MembershipFeed | None = None,
    router: RouterFactory | None = None,
    listen: tuple[str, int] | None = None,
) -> AsyncIterator[Node]:
    """Build and start a node; on exit drain (bounded by --drain-timeout) and stop it. Yields once the
    node listens; with discovery, peering connects in the background when the first membership is
    known (`node.peering.wait_connected()`): a slow API server must not delay serving nor SIGTERM.

    `store`, `membership` and `router` replace the production parts (containerd, the Node watch, the
    one-hop index); `listen` replaces `settings.listen` (tests give each node its own loopback address).
    """
    store = store if store is not None else containerd_store(settings)
    feed = membership if membership is not None else membership_feed(settings)
    listen = listen or settings.listen
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run)
            node = _build(settings, store, feed)
            tg.start_soon(_check_store_config, node)
            await _listen(tg, node.server, listen, settings.source("listen"))
            try:
                await start_observability(node, node.observability, tg)
            except OSError as exc:
                raise StartupError(f"{settings.source('metrics_listen')}: {_bind_error(exc)}") from None
            if node.upstream_watch is not None:
                tg.start_soon(node.upstream_watch.run)
            if settings.discovery is Discovery.KUBERNETES:
                tg.start_soon(_peer, node, router, listen[1])
            try:
                yield node
            finally:
                await node.server.shutdown()  # drain first, bounded by --drain-timeout
                tg.cancel_scope.cancel()
    finally:
        with anyio.move_on_after(5, shield=True):
            await store.aclose()


def _build(settings: ServeSettings, store: Store, feed: MembershipFeed) -> Node:
    """Everything that needs no membership, each part given its collaborators as it is made."""
    policy = TopologyPolicy(
        settings.topology_mode, settings.cross_region, settings.allow_unknown_clients,
        cross_region_bias=settings.cross_region_bias,
    )
    for warning in policy_warnings(policy):
        log_event(log, "config_warning", logging.WARNING, warning=warning)
    tokens = PeerTokens(settings.peer_token_file) if settings.peer_token_file else None
    metrics = Metrics()  # first: the limit reporter and the refusal log count into it from birth
    limits, book, speeds = LimitReporter(on_hit=metrics.limit_hit), PeerBook(), SpeedBook()
    caps = TierCaps.of(settings.cap_from_other_regions, settings.cap_to_peers)
    crossing = CrossingGate(policy, speeds, caps, size_of=lambda d: ingest_size(store, d))
    discovery = settings.discovery is Discovery.KUBERNETES
    peering = Peering(discovery)
    parts = NodeParts(settings, store, policy, feed, peering, book, limits, speeds, caps, crossing, [])
    observability = observe(parts, metrics)
    handler = RegistryHandler(
        store,
        RouteConfig(
            mirrored_registries=None if DEFAULT_REGISTRY_DIR in settings.mirrored_registries
            else settings.mirrored_registries,
            resolve_tags=settings.resolve_tags,
            resolve_latest=settings.resolve_latest,
        ),
        peering,
        peer_handler=peering.handle if discovery else None,
        readiness=_readiness(parts),
        admit=_admission(feed, policy),
        operator_handler=observability.endpoint,
        pull_observer=observability.pulls,
        peer_auth=tokens.accepts if tokens is not None else None,
        uploads=Gate("peer_uploads", settings.max_peer_uploads, limits),
        refusals=RefusalLog(on_refused=metrics.refusal),
        upload_cap=caps.to_peers,
        growing=_growing(settings, store, limits) if discovery else None,
    )
    server = HttpServer(
        handler,
        ServerLimits(
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
            max_connections=settings.max_connections,
            drain_timeout=settings.drain_timeout,
        ),
    )
    # Learn upstream speed from containerd's own fetches after our 404s (a real content store only).
    watch = (
        UpstreamWatcher(lambda: store.content_root, store.namespace, speeds.upstream_seen)
        if discovery and isinstance(store, ContainerdStore) else None
    )
    return Node(
        **vars(parts), handler=handler, server=server, observability=observability, tokens=tokens,
        upstream_watch=watch,
    )


def _growing(settings: ServeSettings, store: Store, limits: LimitReporter) -> GrowingSource | None:
    """Serving peers from a download still in progress: containerd's ingests, so a real store only."""
    if not settings.share_downloads or not isinstance(store, ContainerdStore):
        return None
    return GrowingSource(
        lambda: store.content_root, store.namespace, lambda digest: _in_namespace(store, digest),
        # The homes bound followers per provider (--claim-fan-out); containerd 2.1 follows one layer
        # with many ranged requests at once, so the bodies are bounded like any upload to peers.
        Gate("follower_uploads", settings.max_peer_uploads, limits),
    )


async def _peer(node: Node, router: RouterFactory | None, port: int) -> None:
    """Peering, once the first membership is known: the peer client (from this node's own address), the
    index, the relay; then the advertiser, the index's upkeep and the membership follower. Runs until
    cancelled."""
    settings, store, feed = node.settings, node.store, node.membership
    async with anyio.create_task_group() as tg:
        first: Membership = await tg.start(feed.run)  # ClusterConfigError: a setting is wrong
        me = first.me
        client = PeerClient(local_host=source_address(me))
        tg.start_soon(_close_at_end, client)
        tokens = node.tokens

        def auth_headers() -> list[tuple[str, str]]:
            return [tokens.header] if tokens is not None else []

        probe = (
            IngestProbe(lambda: store.content_root, store.namespace, lambda key: key in store.keys())  # noqa: SIM118
            if settings.share_downloads and isinstance(store, ContainerdStore) else None
        )
        endpoint = None
        if router is not None:
            index = router(first)
        else:
            routing = RoutingSettings(
                advertise_interval=settings.advertise_interval,
                max_entries=settings.index_max_entries,
                claim_fan_out=settings.claim_fan_out,
            )
            service = index_service(first, routing)
            # A node without an address is in no ring, so it is never its own home: nothing to short-cut.
            local = LocalIndex(me.name, me.address, service) if me and me.address else None
            transport = HttpPeerTransport(client, port, extra_headers=auth_headers, local=local)
            index = OneHopRouter(first, transport, routing, service=service, probe=probe)
            endpoint = peer_endpoint(service)
        relay = PeerRelay(
            index, lambda: feed.current, node.policy, client, port, node.book,
            on_mismatch=store.abort_ingests,
            relays=Gate("relays", settings.max_relays, node.limits),
            max_per_peer=settings.max_relays_per_peer,
            auth_headers=auth_headers,
            crossing=node.crossing,
            on_blob_miss=node.upstream_watch.missed if node.upstream_watch is not None else None,
            claims=probe is not None,
        )
        node.peering.connect(index, relay, endpoint)
        node.advertiser = Advertising(store, index)
        await tg.start(node.advertiser.run)
        tg.start_soon(index.run)
        tg.start_soon(_follow_membership, feed, first, index)


async def _close_at_end(client: PeerClient) -> None:
    """Hold the peer client open until the peering task group is cancelled, then close its sockets."""
    async with client:
        await anyio.sleep_forever()


async def _in_namespace(store: Store, digest: Digest) -> bool:
    return await store.info(digest) is not None


def source_address(me: Peer | None) -> str | None:
    """This node's InternalIP if it is one of this host's addresses (hostNetwork), else None (the kernel
    picks). Peers identify a node by the source address of its requests: on a node with several
    addresses the kernel's choice may not be the InternalIP they know it by."""
    if me is None or not me.address:
        return None
    family = socket.AF_INET6 if ":" in me.address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((me.address, 0))
    except OSError as exc:
        log_event(log, "source_address_unavailable", logging.WARNING, address=me.address, error=str(exc))
        return None
    return me.address


async def _listen(tg: TaskGroup, server: HttpServer, listen: tuple[str, int], setting: str) -> None:
    try:
        await tg.start(server.serve, listen)
    except OSError as exc:
        raise StartupError(f"{setting}: {_bind_error(exc)}") from None


def _bind_error(exc: OSError) -> str:
    return f"cannot listen: {exc.strerror or exc}"


class Advertising:
    """Keeps the index equal to the store, for ever: advertise every key at start, then follow the
    store's changes. The store's broadcast drops a subscriber that falls behind (a burst of changes while
    a send is slow); then this subscribes again and reconciles against `Store.keys()`, so no burst can
    end advertising or leave the index stale."""

    def __init__(self, store: Store, router: Router) -> None:
        self.store = store
        self.router = router
        self.resubscribed = 0  # times the stream was lost and the index reconciled (tests, status)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        changes = self.store.subscribe()  # before reading keys: nothing changes unseen in between
        await self.router.start(self.store.keys())
        task_status.started()
        while True:
            with changes:
                async for change in changes:
                    if change.added:
                        await self.router.advertise(change.added)
                    if change.removed:
                        await self.router.withdraw(change.removed)
            changes = self.store.subscribe()
            self.resubscribed += 1
            log_event(log, "advertise_resync", logging.WARNING, keys=len(self.store.keys()))
            await self.router.reconcile(self.store.keys())


async def _follow_membership(feed: MembershipFeed, built_from: Membership, router: Router) -> None:
    first = True
    async for current, change in feed.subscribe():
        if first:  # the subscription opens with the current state, against nothing
            first = False
            if current is not built_from:  # it moved on since the router was built: adopt it whole
                await router.membership_changed(current)
            continue
        # Every later change is against the item before, the router's: its rings move those nodes only.
        await router.membership_changed(current, changed=change.names)


async def _check_store_config(node: Node) -> None:
    """Warn once about what would make lokal useless on this node; kept for /readyz and `lokal status`."""
    hosts_dir = node.settings.config_path
    check = await node.store.check_config(hosts_dir, node.settings.containerd_config)
    node.config_warnings[:] = check.warnings
    node.config_check[:] = [f"read from {check.source}" if check.unchecked is None else check.unchecked]
    # `warnings` counts what `lokal status` lists now (settings, containerd, node), as lokal_config_warnings
    # does; `containerd_config_warnings` only this check's, logged just below.
    version = node.store.health().version
    log_event(log, "config_checked", hosts_dir=hosts_dir, warnings=len(all_warnings(node)),
              containerd_config_warnings=len(check.warnings), containerd_version=version or None,
              source=check.source or None, checked=check.unchecked is None)
    if check.unchecked is not None:  # said plainly, never a warning: a warning must never be false
        log_event(log, "config_unchecked", reason=check.unchecked)
    for warning in check.warnings:
        log_event(log, "config_warning", logging.WARNING, warning=warning)


def _admission(feed: MembershipFeed, policy: TopologyPolicy) -> Admission:
    def admit(client: str) -> tuple[bool, str]:
        verdict = admit_request(client, feed.current or Membership.of("local", []), policy)
        return verdict.allowed, verdict.reason

    return admit


def _readiness(parts: NodeParts) -> ReadinessCheck:
    async def check() -> tuple[bool, dict[str, object]]:
        reachable = await parts.store.ready()
        details: dict[str, object] = {"containerd": "connected" if reachable else "unreachable"}
        health = parts.store.health()
        warnings = [*parts.config_warnings, *health.warnings]
        absent = health.absent_blobs
        if absent:
            warnings.append(f"{absent} layers named by local manifests are absent from the content store")
        if warnings:
            details["warnings"] = warnings
        return reachable, details

    return check


# -- the process ---------------------------------------------------------------------------------------


async def run_until_signalled(settings: ServeSettings) -> None:
    """`lokal serve`: the node, until SIGTERM or SIGINT."""
    log_event(log, "config", **as_log_fields(settings))
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        # Built inside the event loop: grpc.aio channels belong to the loop they are made in.
        async with running_node(settings):
            async for signum in signals:
                log_event(log, "shutdown", signal=signal.Signals(signum).name)
                break
    log_event(log, "stopped")


def check_settings(settings: ServeSettings) -> None:
    """The checks a setting's own parser cannot make (they look at the host); raises a CONFIG_ERRORS error."""
    check_socket_setting(settings.containerd_socket)


def serve(settings: ServeSettings) -> int:
    """Run `lokal serve`; raises StartupError (or a CONFIG_ERRORS member) for the operator's mistakes."""
    try:
        anyio.run(run_until_signalled, settings)
    except BaseExceptionGroup as group:
        raise _operator_error(group) from None
    return 0


def _operator_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error an operator must fix, if the group holds exactly that; else the group itself."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                collect(sub)
        else:
            leaves.append(exc)

    collect(group)
    mistakes = [e for e in leaves if isinstance(e, (StartupError, *CONFIG_ERRORS))]
    if mistakes and len(mistakes) == len(leaves):
        return StartupError(str(mistakes[0]))
    return group
