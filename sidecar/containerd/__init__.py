"""The node's content store: the `Store` seam, its containerd implementation and an in-memory one."""

from sidecar.containerd.content_store import ConfigError, ContainerdStore, check_socket_setting
from sidecar.containerd.memory import MemoryStore
from sidecar.containerd.store import (
    BlobInfo,
    FileBlob,
    KeyChange,
    Manifest,
    OpenBlob,
    Store,
    StoreHealth,
    StoreUnavailable,
    StreamBlob,
)

__all__ = [
    "BlobInfo",
    "ConfigError",
    "ContainerdStore",
    "FileBlob",
    "KeyChange",
    "Manifest",
    "MemoryStore",
    "OpenBlob",
    "Store",
    "StoreHealth",
    "StoreUnavailable",
    "StreamBlob",
    "check_socket_setting",
]
