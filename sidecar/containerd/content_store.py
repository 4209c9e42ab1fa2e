"""`ContainerdStore`: the `Store` over a real containerd, with zero-copy file access to its blobs.

Rules:
- Only the configured namespace is read. A file in the shared blob directory is served only for a digest
  that this namespace holds (it is in the index, built from namespaced calls, or Info finds it).
- Blobs are served from `<content root>/blobs/<alg>/<hex>` when readable; otherwise through gRPC Read.
  The handle says which (`source`).
- The index (keys this node can serve) follows containerd's image events, and is rebuilt by a rescan
  after every (re)connect and every `rescan_interval`, so that nothing missed is lost. A rescan never
  overwrites a newer event, and costs two calls (List images, List content) plus a walk of each target
  it has not walked before, however many layers the node holds (sidecar/containerd/rescan.py).
- One log line per connection state change, not per retry.
- Calls on a request's path (a tag, a manifest, a blob's Info, /readyz) have short deadlines, far below
  what containerd waits for a mirror (tens of seconds) and what the kubelet waits for a probe (1 s). Once
  one runs past its deadline (a hung containerd: SIGSTOP, a deadlock), the request path stops asking for
  `STALL_PAUSE_S` and answers "unavailable" at once: a hung containerd costs one deadline per pause, not
  one per request. Background work (walks, rescans) keeps the long deadline.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import grpc
import grpc.aio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from sidecar.backoff import Backoff
from sidecar.containerd.broadcast import ChangeBroadcast
from sidecar.containerd.client import ContainerdClient, ContainerdStalled
from sidecar.containerd.cri_config import (
    ConfigCheck,
    check_containerd,
    read_config_files,
    read_containerd_version,
    read_cri_config,
)
from sidecar.containerd.diagnostics import content_root_warning, namespace_warning
from sidecar.containerd.events import TOPICS, ContentDeleted, ImageChanged, ImageDeleted, parse_event
from sidecar.containerd.rescan import EventLog, Walked, merge
from sidecar.containerd.store import (
    BlobInfo,
    FileBlob,
    KeyChange,
    Manifest,
    OpenBlob,
    StoreHealth,
    StoreUnavailable,
    StreamBlob,
)
from sidecar.containerd.walk import WalkResult, walk_image
from sidecar.logs import get_logger, log_event
from sidecar.oci import Digest, InvalidDigest, NotAManifest, is_digest, load_manifest, parse_digest, tag_key
from sidecar.oci.mediatypes import MAX_MANIFEST_BYTES

log = get_logger("containerd")

CONTENT_SUBDIR = "io.containerd.content.v1.content"
# GC deletes content without an event, shortly after an image delete: re-check before withdrawing.
REMOVAL_RECHECKS = (0.2, 0.8, 2.0)
REQUEST_DEADLINE_S = 1.0  # a containerd call on a request's path; a healthy one answers in milliseconds
READY_DEADLINE_S = 0.3  # /readyz's question to containerd: the kubelet's probe gives up after 1 s
STALL_PAUSE_S = 2.0  # after a request-path deadline, how long requests answer without asking containerd

T = TypeVar("T")


class DamagedBlob(OSError):
    """The blob's file has another size than its descriptor says (a full disk, a torn copy)."""


class ConfigError(ValueError):
    """A setting is wrong; the message names it."""


def check_socket_setting(socket_path: str) -> None:
    """Fail fast on a socket path that can never work. An absent socket is fine: containerd may start
    later, and the connection loop says so once."""
    path = Path(socket_path)
    if path.exists() and not stat.S_ISSOCK(path.stat().st_mode):
        raise ConfigError(f"--containerd-socket {socket_path!r} exists but is not a socket")
    if not path.parent.is_dir():
        raise ConfigError(
            f"--containerd-socket {socket_path!r}: directory {str(path.parent)!r} does not exist"
        )


def _walked(target: str, result: WalkResult) -> Walked:
    named = result.keys | result.absent | result.foreign
    return Walked(target, frozenset(key for key in named if is_digest(key)), frozenset(result.foreign))


class ContainerdStore:
    def __init__(
        self,
        socket_path: str,
        namespace: str = "k8s.io",
        content_root: str | None = None,
        rescan_interval: float = 300.0,
    ) -> None:
        check_socket_setting(socket_path)
        self.socket_path = socket_path
        self.namespace = namespace
        self.content_root = content_root
        self.rescan_interval = rescan_interval
        self.connected = False
        self.version = ""
        self.absent_blobs = 0  # blobs a present manifest names but the store lacks (discarded layers?)
        self._configured_root = content_root
        self._client = ContainerdClient(socket_path, namespace)
        self._image_keys: dict[str, frozenset[str]] = {}
        self._sizes: dict[str, int] = {}
        self._orphans: set[str] = set()  # unreferenced but still on disk: kept until GC takes them
        self._index: frozenset[str] = frozenset()
        self._events = EventLog()  # which images and blobs events changed, so a rescan never undoes them
        self._walked: dict[str, Walked] = {}  # target digest -> its walk, reused by rescans
        self._changes = ChangeBroadcast()
        self._lock = anyio.Lock()
        self._down_logged = False
        self.stalled = False  # a request-path call ran past its deadline, and none has answered since
        self._ask_again_at = 0.0  # monotonic: the request path does not ask containerd before this
        self._images_elsewhere: dict[str, int] = {}  # images per namespace, read when ours holds none
        self._warned: set[str] = set()  # warnings already logged

    async def aclose(self) -> None:
        self._changes.close()
        await self._client.close()

    def health(self) -> StoreHealth:
        return StoreHealth(self.connected, self.absent_blobs, tuple(self.warnings), self.version)

    async def check_config(self, hosts_dir: str, config_file: str) -> ConfigCheck:
        """containerd's configuration, checked once the CRI service answers (it may start later): from
        CRI status on 1.x, from the config file on 2.x (see cri_config)."""
        while True:
            config = await read_cri_config(self.socket_path)
            if config is not None:
                break
            await anyio.sleep(2.0)
        version = await read_containerd_version(self.socket_path)
        files = {} if "registry" in config else read_config_files(config_file)
        return check_containerd(config, hosts_dir, config_file, files, version)

    # -- Store: reads ------------------------------------------------------------------------------

    async def info(self, digest: Digest) -> BlobInfo | None:
        found = await self._on_request_path(lambda: self._client.info(digest, REQUEST_DEADLINE_S))
        if found is None:
            return None
        return BlobInfo(digest, int(found.size), dict(found.labels))

    async def open_blob(self, digest: Digest) -> OpenBlob | None:
        # The size a file must have comes from the image's descriptors (indexed keys) or containerd's
        # Info: a file cut short on disk is then never served as a whole 200.
        known_size = self._sizes.get(str(digest)) if str(digest) in self._index else None
        if known_size is None:
            if self._surely_absent(digest):
                return None  # a miss, the common case on a cold pull: no need to ask containerd
            info = await self._checked_info(digest)
            if info is None:
                return None
            known_size = info.size
        try:
            opened = self._open_file(digest, known_size)
        except DamagedBlob as exc:
            # containerd's own Read would stream the same broken file: a fast 404 sends the asker on.
            log_event(log, "blob_damaged", logging.WARNING, digest=digest.short, error=str(exc))
            return None
        if opened is not None:
            return opened
        info = await self._checked_info(digest)  # the fallback needs the size, and containerd's word
        if info is None:
            return None
        client = self._client
        if info.size and not await self._readable_through_grpc(digest):
            log_event(log, "blob_damaged", logging.WARNING, digest=digest.short,
                      error="containerd cannot read it")
            return None

        def read(offset: int, length: int) -> AsyncIterator[bytes]:
            return client.read(digest, offset, length)

        log_event(log, "blob_fallback_grpc", digest=digest.short, reason="file not readable")
        return StreamBlob(info.size, read)

    async def _readable_through_grpc(self, digest: Digest) -> bool:
        """Whether containerd can read the blob's first byte: a listed blob whose file is gone gets a
        fast 404 rather than a response that breaks before its first byte."""
        chunks = self._client.read(digest, 0, 1, deadline_s=REQUEST_DEADLINE_S)
        try:
            async for _ in chunks:
                return True
        except (LookupError, StoreUnavailable):
            return False
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        return False

    async def read_manifest(self, digest: Digest) -> Manifest | None:
        data = await self._read_small(digest, on_request_path=True)
        if data is None:
            return None
        try:
            media_type, _ = load_manifest(data)
        except NotAManifest:
            return None
        return Manifest(digest, media_type, data)

    async def resolve_tag(self, registry: str, repository: str, tag: str) -> Digest | None:
        name = tag_key(registry, repository, tag)
        target = await self._on_request_path(lambda: self._client.get_image_target(name, REQUEST_DEADLINE_S))
        if target is None:
            return None
        try:
            return parse_digest(target)
        except InvalidDigest:
            return None

    async def list_keys(self) -> frozenset[str]:
        image_keys, _ = await self._walk_all()
        return frozenset().union(*image_keys.values())

    def keys(self) -> frozenset[str]:
        return self._index

    async def abort_ingests(self, digest: Digest) -> int:
        return await self._client.abort_ingests(digest)

    def subscribe(self) -> MemoryObjectReceiveStream[KeyChange]:
        return self._changes.subscribe()

    async def ready(self) -> bool:
        try:
            await self._on_request_path(lambda: self._client.version(READY_DEADLINE_S))
        except StoreUnavailable:
            return False
        return True

    async def _on_request_path(self, call: Callable[[], Awaitable[T]]) -> T:
        """Ask containerd for a request, unless it recently let a request-path call run out of time."""
        if self.stalled and time.monotonic() < self._ask_again_at:
            raise ContainerdStalled("containerd unavailable: it stopped answering; not asked again yet")
        try:
            answer = await call()
        except ContainerdStalled:
            self._ask_again_at = time.monotonic() + STALL_PAUSE_S
            if not self.stalled:
                self.stalled = True
                log_event(log, "containerd_stalled", logging.WARNING, socket=self.socket_path,
                          why="a call ran past its deadline", answering_404_for_s=STALL_PAUSE_S)
            raise
        if self.stalled:
            self.stalled = False
            log_event(log, "containerd_answering", socket=self.socket_path)
        return answer

    # -- the event loop ----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow containerd for ever: subscribe, rescan, apply events; reconnect with backoff."""
        backoff = Backoff(0.1, 5.0, jitter=0.5, reset_after=30.0, rng=random.Random())
        started = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._rescan_periodically)
            while True:
                try:
                    call = self._client.subscribe(TOPICS)
                    await self._connect()
                    if not started:
                        task_status.started()
                        started = True
                    async for envelope in call:
                        if envelope.namespace == self.namespace:
                            await self._apply(envelope.topic, envelope.event.type_url, envelope.event.value)
                    raise StoreUnavailable("containerd closed the event stream")
                except (StoreUnavailable, grpc.aio.AioRpcError) as exc:
                    delay = backoff.next_delay(time.monotonic())
                    self._disconnected(exc, delay)
                    if not started:
                        task_status.started()  # serve (and answer 404s) while containerd is away
                        started = True
                    await anyio.sleep(delay)

    async def _connect(self) -> None:
        self.version = await self._client.version()
        if self._configured_root is None:
            plugin_root = await self._client.content_root()
            self.content_root = plugin_root
        await self.rescan()
        self._images_elsewhere = {} if self._image_keys else await self._client.images_by_namespace()
        for warning in self.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                log_event(log, "config_warning", logging.WARNING, warning=warning)
        if not self.connected:
            self.connected = True
            log_event(
                log,
                "containerd_connected",
                socket=self.socket_path,
                version=self.version,
                namespace=self.namespace,
                content_root=self.content_root,
                images=len(self._image_keys),
                keys=len(self._index),
            )

    @property
    def _holds_content(self) -> bool:
        """containerd holds something, in this namespace or another (its content root must exist)."""
        return bool(self._index) or any(self._images_elsewhere.values())

    @property
    def warnings(self) -> list[str]:
        """What makes this store slower or emptier than it should be, as it stands now."""
        found = [
            content_root_warning(self.content_root, holds_content=self._holds_content),
            namespace_warning(self.namespace, len(self._image_keys), self._images_elsewhere),
        ]
        return [warning for warning in found if warning is not None]

    def _disconnected(self, exc: BaseException, retry_in: float) -> None:
        if self.connected or not self._down_logged:
            self._down_logged = True
            reason = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            hint = "" if Path(self.socket_path).exists() else " (no socket at --containerd-socket)"
            log_event(
                log,
                "containerd_disconnected",
                logging.WARNING,
                socket=self.socket_path,
                reason=f"{reason}{hint}",
                retry_in_s=round(retry_in, 2),
                serving="files already indexed" if self._index else "nothing (404s)",
            )
        self.connected = False

    async def _rescan_periodically(self) -> None:
        while True:
            await anyio.sleep(self.rescan_interval)
            if self.connected:
                with contextlib.suppress(StoreUnavailable):  # the event loop notices and reconnects
                    await self.rescan()

    async def rescan(self) -> None:
        """Bring the index in line with containerd: two List calls, and a walk of each new target."""
        start = self._events.seq
        cached = dict(self._walked)
        images = await self._client.list_images()
        present = await self._client.list_content()

        async def held(digest: Digest) -> bool:
            return str(digest) in present

        scanned: dict[str, frozenset[str]] = {}
        absent: set[str] = set()
        walked: dict[str, Walked] = {}
        for name, target in images:
            if not is_digest(target):
                scanned[name] = frozenset()
                continue
            walk = walked.get(target) or cached.get(target)
            if walk is None:
                result = await walk_image(name, parse_digest(target), self._read_small, held)
                self._sizes.update(result.sizes)
                walk = _walked(target, result)
            if target in present:
                walked[target] = walk
            scanned[name] = walk.keys(name, present)
            absent |= walk.absent(present)
        async with self._lock:
            touched, deleted = self._events.since(start)
            self._image_keys = merge(self._image_keys, scanned, touched, deleted)
            self._orphans = {key for key in self._orphans if key in present and key not in deleted}
            self._events.forget_through(start)
            for target in walked:
                latest = self._walked.get(target)
                if latest is not None and latest is not cached.get(target):
                    walked[target] = latest  # an event walked it during the scan: that walk is newer
            self._walked = walked
            self.absent_blobs = len(absent)
            self._publish_index()

    async def _walk_all(self) -> tuple[dict[str, frozenset[str]], int]:
        image_keys: dict[str, frozenset[str]] = {}
        absent: set[str] = set()
        for name, target in await self._client.list_images():
            keys, missing = await self._walk(name, target)
            image_keys[name] = keys
            absent |= missing
        return image_keys, len(absent)

    async def _walk(self, name: str, target: str) -> tuple[frozenset[str], set[str]]:
        if not is_digest(target):
            return frozenset(), set()
        result = await walk_image(name, parse_digest(target), self._read_small, self._exists)
        self._sizes.update(result.sizes)  # a digest's size never changes: no need to forget
        if result.keys:
            self._walked[target] = _walked(target, result)
        return frozenset(result.keys), result.absent

    async def _apply(self, topic: str, type_url: str, value: bytes) -> None:
        event = parse_event(topic, type_url, value)
        if isinstance(event, ImageChanged):
            target = await self._client.get_image_target(event.name)
            keys, _ = await self._walk(event.name, target) if target else (frozenset(), set())
            async with self._lock:
                self._events.image(event.name)
                self._image_keys[event.name] = keys
                self._publish_index()
        elif isinstance(event, ImageDeleted):
            async with self._lock:
                self._events.image(event.name)
                self._image_keys.pop(event.name, None)
                before = self._index
                self._publish_index(keep=before)  # digests stay until Info confirms they are gone
            await self._recheck_removals(before)
        elif isinstance(event, ContentDeleted) and is_digest(event.digest):
            async with self._lock:
                self._events.blob_deleted(event.digest)
                self._image_keys = {n: k - {event.digest} for n, k in self._image_keys.items()}
                self._orphans.discard(event.digest)
                self._publish_index()

    async def _recheck_removals(self, before: frozenset[str]) -> None:
        referenced = frozenset().union(*self._image_keys.values())
        candidates = {key for key in before - referenced if is_digest(key)}
        for delay in REMOVAL_RECHECKS:
            if not candidates:
                break
            await anyio.sleep(delay)
            candidates = {key for key in candidates if await self._client.info(parse_digest(key))}
        async with self._lock:
            self._orphans |= candidates
            self._publish_index()

    def _publish_index(self, keep: frozenset[str] = frozenset()) -> None:
        """Recompute the index from the image walks; `keep` holds digests awaiting their Info re-check."""
        referenced = frozenset().union(*self._image_keys.values())
        pending = {key for key in keep if is_digest(key)}
        new = referenced | self._orphans | pending
        change = KeyChange(added=new - self._index, removed=self._index - new)
        self._index = new
        self._changes.publish(change)

    # -- blob access -------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> str | None:
        if not self.content_root:
            return None
        return f"{self.content_root}/blobs/{digest.algorithm}/{digest.hex}"

    def _surely_absent(self, digest: Digest) -> bool:
        """No file in the shared blob directory means no namespace holds the blob. Only trusted when
        that directory is there and searchable by us (else the gRPC path must decide)."""
        path = self.blob_path(digest)
        if path is None or not os.access(f"{self.content_root}/blobs/{digest.algorithm}", os.X_OK):
            return False
        return not os.path.lexists(path)

    def _open_file(self, digest: Digest, expected_size: int | None) -> FileBlob | None:
        path = self.blob_path(digest)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EIO):
                log_event(log, "blob_open_failed", logging.WARNING, digest=digest.short, error=str(exc))
            return None
        size = os.fstat(fd).st_size
        if expected_size is not None and size != expected_size:
            os.close(fd)  # a torn or foreign file: never serve it as whole
            raise DamagedBlob(f"{digest.short} is {size} bytes on disk, {expected_size} expected")
        return FileBlob(fd, size)

    async def _checked_info(self, digest: Digest) -> BlobInfo | None:
        try:
            return await self.info(digest)
        except StoreUnavailable:
            return None

    async def _read_small(self, digest: Digest, on_request_path: bool = False) -> bytes | None:
        """A manifest's bytes, verified against its digest (cheap at this size) when read from disk."""
        opened = self._open_file(digest, None) if str(digest) in self._index else None  # no size check
        if opened is not None:
            try:
                data = os.pread(opened.fd, opened.size, 0) if opened.size <= MAX_MANIFEST_BYTES else b""
            finally:
                opened.close()
            hasher = digest.hasher()
            hasher.update(data)
            if data and hasher.hexdigest() == digest.hex:
                return data
        if self._surely_absent(digest):
            return None
        if on_request_path:
            return await self._on_request_path(
                lambda: self._client.read_all(digest, MAX_MANIFEST_BYTES, REQUEST_DEADLINE_S)
            )
        return await self._client.read_all(digest, MAX_MANIFEST_BYTES)

    async def _exists(self, digest: Digest) -> bool:
        return await self._client.info(digest) is not None
