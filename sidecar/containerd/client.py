"""A thin async gRPC client for containerd's content, images, events, introspection and version services.

Rules:
- Every namespaced call carries `containerd-namespace`; only the configured namespace is ever read, except
  for counting images per namespace (`images_by_namespace`), which names the right one in a warning.
- NOT_FOUND becomes None. UNAVAILABLE (and a missing socket) becomes `StoreUnavailable`; a call that ran
  past its deadline (a hung containerd: SIGSTOP, a deadlock) becomes `ContainerdStalled`, a kind of it.
- Every unary call has a deadline; the caller picks a short one on a request's path (`deadline_s`).
- No caching and no policy here: `ContainerdStore` decides what to ask and when.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
from google.protobuf import empty_pb2

from sidecar._proto.containerd.services.content.v1 import content_pb2, content_pb2_grpc
from sidecar._proto.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from sidecar._proto.containerd.services.images.v1 import images_pb2, images_pb2_grpc
from sidecar._proto.containerd.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from sidecar._proto.containerd.services.namespaces.v1 import namespaces_pb2, namespaces_pb2_grpc
from sidecar._proto.containerd.services.version.v1 import version_pb2_grpc
from sidecar.containerd.store import StoreUnavailable
from sidecar.oci import Digest

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # Images.List answers in one message
CALL_TIMEOUT = 10.0
CONTENT_PLUGIN = "io.containerd.content.v1"
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}


class ContainerdStalled(StoreUnavailable):
    """containerd accepted the call and did not answer before the deadline."""


class ContainerdClient:
    def __init__(self, socket_path: str, namespace: str) -> None:
        self.socket_path = socket_path
        self.namespace = namespace
        self._metadata = (("containerd-namespace", namespace),)
        self._channel = grpc.aio.insecure_channel(
            f"unix://{Path(socket_path).absolute()}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Reconnect quickly after a containerd restart; the default backoff grows to minutes.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        self._content = content_pb2_grpc.ContentStub(self._channel)
        self._images = images_pb2_grpc.ImagesStub(self._channel)
        self._events = events_pb2_grpc.EventsStub(self._channel)
        self._introspection = introspection_pb2_grpc.IntrospectionStub(self._channel)
        self._version = version_pb2_grpc.VersionStub(self._channel)
        self._namespaces = namespaces_pb2_grpc.NamespacesStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def version(self, deadline_s: float = CALL_TIMEOUT) -> str:
        try:
            response = await self._version.Version(empty_pb2.Empty(), timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from None
        return str(response.version)

    async def content_root(self) -> str | None:
        """The content plugin's root directory, from Introspection."""
        request = introspection_pb2.PluginsRequest(filters=[f"type=={CONTENT_PLUGIN}"])
        try:
            response = await self._introspection.Plugins(request, timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from None
        for plugin in response.plugins:
            root = plugin.exports.get("root")
            if root:
                return str(root)
        return None

    async def info(self, digest: Digest, deadline_s: float = CALL_TIMEOUT) -> content_pb2.Info | None:
        request = content_pb2.InfoRequest(digest=str(digest))
        try:
            response = await self._content.Info(request, metadata=self._metadata, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable(exc) from None
        info: content_pb2.Info = response.info
        return info

    async def read(
        self, digest: Digest, offset: int = 0, size: int = 0, deadline_s: float | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a blob's bytes from `offset` (size 0: to the end). Raises LookupError if absent.
        `deadline_s` bounds the whole stream: None for a layer's body, whose time depends on its size."""
        request = content_pb2.ReadContentRequest(digest=str(digest), offset=offset, size=size)
        call = self._content.Read(request, metadata=self._metadata, timeout=deadline_s)
        try:
            async for response in call:
                yield response.data
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise LookupError(f"{digest} is not in the content store") from None
            raise _unavailable(exc) from None
        finally:
            call.cancel()

    async def read_all(self, digest: Digest, limit: int, deadline_s: float = CALL_TIMEOUT) -> bytes | None:
        """A small blob's bytes (a manifest), or None if absent or larger than `limit`."""
        info = await self.info(digest, deadline_s)
        if info is None or info.size > limit:
            return None
        chunks = []
        try:
            async for chunk in self.read(digest, deadline_s=deadline_s):
                chunks.append(chunk)
        except LookupError:
            return None
        return b"".join(chunks)

    async def get_image_target(self, name: str, deadline_s: float = CALL_TIMEOUT) -> str | None:
        request = images_pb2.GetImageRequest(name=name)
        try:
            response = await self._images.Get(request, metadata=self._metadata, timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable(exc) from None
        return str(response.image.target.digest)

    async def list_images(self) -> list[tuple[str, str]]:
        """(name, target digest) of every image in the namespace."""
        try:
            response = await self._images.List(
                images_pb2.ListImagesRequest(), metadata=self._metadata, timeout=CALL_TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from None
        return [(image.name, image.target.digest) for image in response.images]

    async def images_by_namespace(self) -> dict[str, int]:
        """How many images every namespace holds: only to tell the operator which one to configure."""
        try:
            listed = await self._namespaces.List(namespaces_pb2.ListNamespacesRequest(), timeout=CALL_TIMEOUT)
            counts = {}
            for namespace in listed.namespaces:
                response = await self._images.List(
                    images_pb2.ListImagesRequest(),
                    metadata=(("containerd-namespace", namespace.name),),
                    timeout=CALL_TIMEOUT,
                )
                counts[str(namespace.name)] = len(response.images)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from None
        return counts

    async def list_content(self) -> set[str]:
        """The digest of every blob this namespace holds: one streamed call, however many blobs."""
        call = self._content.List(content_pb2.ListContentRequest(), metadata=self._metadata,
                                  timeout=CALL_TIMEOUT)
        digests: set[str] = set()
        try:
            async for response in call:
                digests.update(info.digest for info in response.info)
        except grpc.aio.AioRpcError as exc:
            raise _unavailable(exc) from None
        finally:
            call.cancel()
        return digests

    async def abort_ingests(self, digest: Digest) -> int:
        """Drop every in-progress ingest that expects `digest`; returns how many were dropped."""
        try:
            response = await self._content.ListStatuses(
                content_pb2.ListStatusesRequest(), metadata=self._metadata, timeout=CALL_TIMEOUT
            )
            # containerd 1.6 keeps no `expected` in ingest statuses; its fetcher names the ingest
            # "<kind>-<digest>" (layer-sha256:..., manifest-sha256:...), so match the ref too.
            refs = [
                status.ref
                for status in response.statuses
                if status.expected == str(digest) or status.ref.endswith(f"-{digest}")
            ]
            for ref in refs:
                await self._content.Abort(
                    content_pb2.AbortRequest(ref=ref), metadata=self._metadata, timeout=CALL_TIMEOUT
                )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise _unavailable(exc) from None
        return len(refs)

    def subscribe(self, topics: list[str]) -> grpc.aio.UnaryStreamCall:
        """The event stream of this namespace, for the given topics."""
        topic_filter = "|".join(topics)
        request = events_pb2.SubscribeRequest(
            filters=[f'namespace=={self.namespace},topic~="{topic_filter}"']
        )
        return self._events.Subscribe(request)


def _unavailable(exc: grpc.aio.AioRpcError) -> Exception:
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ContainerdStalled("containerd unavailable: no answer before the deadline")
    if exc.code() in _UNAVAILABLE:
        return StoreUnavailable(f"containerd unavailable: {exc.details() or exc.code().name}")
    return StoreUnavailable(f"containerd error {exc.code().name}: {exc.details()}")
