"""containerd events that change what this node can serve. Pure: envelope fields in, a typed event out.

The `Any` in an envelope carries a bare message name as its type_url (no `/`), so `Any.Unpack` does not
work; we match on the name and parse the bytes ourselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from sidecar._proto.containerd.events import content_pb2, image_pb2

# /content/create exists from containerd 2.1 on; 1.6/1.7 index new content from image events.
TOPICS = ["/images/create", "/images/update", "/images/delete", "/content/delete"]


@dataclass(frozen=True, slots=True)
class ImageChanged:
    name: str


@dataclass(frozen=True, slots=True)
class ImageDeleted:
    name: str


@dataclass(frozen=True, slots=True)
class ContentDeleted:
    digest: str


StoreEvent = ImageChanged | ImageDeleted | ContentDeleted


def parse_event(topic: str, type_url: str, value: bytes) -> StoreEvent | None:
    """The event an envelope carries, or None for topics and payloads lokal ignores."""
    message_name = type_url.rsplit("/", 1)[-1]
    try:
        if topic in ("/images/create", "/images/update"):
            parsed_image = (
                image_pb2.ImageCreate.FromString(value)
                if message_name.endswith("ImageCreate")
                else image_pb2.ImageUpdate.FromString(value)
            )
            return ImageChanged(parsed_image.name) if parsed_image.name else None
        if topic == "/images/delete":
            deleted = image_pb2.ImageDelete.FromString(value)
            return ImageDeleted(deleted.name) if deleted.name else None
        if topic == "/content/delete":
            content = content_pb2.ContentDelete.FromString(value)
            return ContentDeleted(content.digest) if content.digest else None
    except DecodeError:
        return None
    return None
