"""Pull, inspect and remove images the way a kubelet does: CRI over containerd's socket."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from sidecar._proto.cri.runtime.v1 import api_pb2, api_pb2_grpc


class CriClient:
    def __init__(self, socket_path: Path | str) -> None:
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self._images = api_pb2_grpc.ImageServiceStub(self._channel)
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pull(self, image: str, timeout: float = 120.0) -> str:
        """Pull `image`; returns the image ref (config digest). Raises grpc.RpcError on failure."""
        request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image))
        response = self._images.PullImage(request, timeout=timeout)
        return str(response.image_ref)

    def image_status(self, image: str) -> api_pb2.Image | None:
        request = api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image))
        response = self._images.ImageStatus(request, timeout=10)
        found: api_pb2.Image = response.image
        return found if found.id else None

    def remove(self, image: str) -> None:
        request = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image))
        self._images.RemoveImage(request, timeout=30)

    def cri_config(self) -> dict[str, object]:
        """The CRI plugin's configuration, from a verbose Status."""
        response = self._runtime.Status(api_pb2.StatusRequest(verbose=True), timeout=10)
        config: dict[str, object] = json.loads(response.info.get("config", "{}"))
        return config
