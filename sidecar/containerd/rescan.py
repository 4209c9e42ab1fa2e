"""The rescan's pure parts: what a rescan may change, and an image's keys from a walk done before.

Rules:
- A rescan never overwrites a newer event. `EventLog` numbers the events; an image an event touched after
  the rescan began keeps the event's keys (or stays deleted), and a blob deleted after it began stays out.
- An image's walk is paid once per target digest: the manifests under a digest never change. A rescan
  then only needs which blobs the namespace holds now (one List call), not one Info call per layer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from sidecar.oci import split_image_name, tag_key


@dataclass(frozen=True, slots=True)
class Walked:
    """What the walk of one target found: every digest it read or found named below the target."""

    target: str
    named: frozenset[str]
    foreign: frozenset[str] = frozenset()  # named for another platform only: absent is normal

    def keys(self, name: str, present: Collection[str]) -> frozenset[str]:
        """The keys image `name` makes servable while `present` are the namespace's blobs."""
        if self.target not in present:
            return frozenset()
        keys = {digest for digest in self.named if digest in present}
        parts = split_image_name(name)
        if parts is not None:
            keys.add(tag_key(*parts))
        return frozenset(keys)

    def absent(self, present: Collection[str]) -> set[str]:
        return {digest for digest in self.named if digest not in present and digest not in self.foreign}


@dataclass
class EventLog:
    """The sequence number of the last event that touched each image and each deleted blob."""

    seq: int = 0
    images: dict[str, int] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)

    def image(self, name: str) -> None:
        self.seq += 1
        self.images[name] = self.seq

    def blob_deleted(self, digest: str) -> None:
        self.seq += 1
        self.blobs[digest] = self.seq

    def since(self, start: int) -> tuple[set[str], set[str]]:
        """(images touched, blobs deleted) after sequence number `start`."""
        images = {name for name, seq in self.images.items() if seq > start}
        return images, {digest for digest, seq in self.blobs.items() if seq > start}

    def forget_through(self, start: int) -> None:
        """A rescan that began at `start` has been merged: older events can no longer matter."""
        self.images = {n: s for n, s in self.images.items() if s > start}
        self.blobs = {d: s for d, s in self.blobs.items() if s > start}


def merge(
    current: Mapping[str, frozenset[str]],
    scanned: Mapping[str, frozenset[str]],
    touched: Collection[str],
    deleted: Collection[str],
) -> dict[str, frozenset[str]]:
    """The image keys after a rescan: the scan's, except where an event since its start knows better."""
    merged = {name: keys for name, keys in scanned.items() if name not in touched}
    merged.update({name: current[name] for name in touched if name in current})
    if deleted:
        gone = frozenset(deleted)
        merged = {name: keys - gone for name, keys in merged.items()}
    return merged
