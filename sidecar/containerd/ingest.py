"""containerd's in-progress downloads (ingests), found by digest and followed as they grow. Filesystem only.

The facts this module relies on (containerd's content store layout, checked on 1.6.20 and 1.7.24):
- An ingest is a directory `<content root>/ingest/<hex of the ref>/` holding `ref` (text such as
  `k8s.io/1/layer-sha256:<hex>`: the namespace, a sequence number, then `<kind>-<digest>`), `total`
  (the expected size, decimal), `startedat` / `updatedat` (RFC 3339 text) and `data`, which grows as
  containerd writes. containerd opens the writer (the directory appears) before it asks any host for the
  bytes, so the ingest exists by the time a mirror sees the request.
- On commit containerd verifies the digest, then renames `data` to `<content root>/blobs/<alg>/<hex>` and
  removes the directory. A descriptor opened on `data` keeps reading the same inode, so a follower ends on
  the committed blob without reopening it.
- A restarted copy may truncate `data` to 0 and write it again; a digest's bytes never change, so the
  bytes already read stay right.

Rules:
- Only ingests of the configured namespace count (the ref's first path element).
- `follow` never yields a byte beyond the file's current size, and holds back the blob's last byte until
  the same inode is committed as the blob: an ingest that containerd abandons (removed, or stalled for
  `stall` seconds) ends short (`IngestEnded`), never as a complete body.
- Every wait is bounded: an ingest must appear within `appear`, and must keep growing (any size change
  counts) at least every `stall` seconds.
- No clock of its own beyond the event loop's (`anyio.current_time`); nothing here talks to containerd.

API for other parts (the growing-blob server, the upstream-speed sampler):
    find_ingest(root, digest, ns) -> Ingest | None          which ingest is fetching `digest`, if any
    progress(ingest) -> IngestProgress | None               offset, total, started/updated (None: gone)
    await wait_for_ingest(root, digest, ns, appear) -> Ingest | None
    GrowingBlob.open(ingest, blob_path) ; async for chunk in blob.follow(start, length, ...)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio

from sidecar.oci import Digest

INGEST_SUBDIR = "ingest"
APPEAR_TIMEOUT = 5.0  # an ingest named by a claim must appear within this, or the claim is dead
# An ingest whose size does not change for this long is dead (upstream or the node gone). Not shorter: on a
# congested upstream link (the benchmark's isolate burst, 6+ streams through one 100 Mbit/s tbf) a live
# download can pause for seconds, and a follower that gives up on it adds one more upstream copy.
# A cancelled or failed pull is seen sooner: containerd removes its ingest within about a second.
STALL_TIMEOUT = 5.0
POLL_INTERVAL = 0.01  # how often a follower looks at the file's size while it waits for bytes
CHUNK = 1024 * 1024
_KINDS = ("layer", "config", "manifest", "index", "unknown")


class IngestEnded(Exception):
    """The ingest stopped before the requested bytes were all written (abandoned, stalled or gone)."""


@dataclass(frozen=True, slots=True)
class Ingest:
    directory: Path
    ref: str  # e.g. "k8s.io/1/layer-sha256:<hex>"
    total: int  # expected size; 0 when containerd did not know it

    @property
    def data_path(self) -> Path:
        return self.directory / "data"


@dataclass(frozen=True, slots=True)
class IngestProgress:
    offset: int  # bytes written so far
    total: int
    started_at: float | None  # wall-clock seconds (containerd's startedat), None when unreadable
    updated_at: float | None


def ingest_root(content_root: str | Path) -> Path:
    return Path(content_root) / INGEST_SUBDIR


def ref_digest(ref: str, namespace: str) -> str | None:
    """The digest an ingest ref of `namespace` downloads (`<ns>/<n>/<kind>-<digest>`), else None."""
    namespace_part, _, rest = ref.partition("/")
    if namespace_part != namespace or not rest:
        return None
    kind, sep, named = rest.rpartition("/")[2].partition("-")
    return named if sep and kind in _KINDS else None


def ref_matches(ref: str, digest: Digest | str, namespace: str) -> bool:
    """Whether an ingest ref is `namespace`'s download of `digest`."""
    return ref_digest(ref, namespace) == str(digest)


def parse_timestamp(text: str) -> float | None:
    """containerd's RFC 3339 text (nanoseconds, `Z`) as epoch seconds; None when it is not one."""
    text = text.strip()
    head, dot, fraction = text.partition(".")
    if dot:  # Python parses at most microseconds
        digits = len(fraction) - len(fraction.lstrip("0123456789"))
        fraction = fraction[:min(digits, 6)] + fraction[digits:]
        text = f"{head}.{fraction}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _read_text(path: Path, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode(errors="replace")
    except OSError:
        return None


def read_ingest(directory: Path) -> Ingest | None:
    ref = _read_text(directory / "ref")
    return None if ref is None else _with_total(directory, ref.strip())


def _with_total(directory: Path, ref: str) -> Ingest:
    total_text = (_read_text(directory / "total") or "").strip()
    return Ingest(directory, ref, int(total_text) if total_text.isdigit() else 0)


def find_ingest(content_root: str | Path, digest: Digest | str, namespace: str) -> Ingest | None:
    """The ingest that is fetching `digest` in `namespace`; the one written most recently when several."""
    try:
        entries = list(os.scandir(ingest_root(content_root)))
    except OSError:
        return None
    best: tuple[float, Ingest] | None = None
    for entry in entries:
        # Only the ref is read for every entry; the rest only for the download of `digest`.
        ref = _read_text(Path(entry.path) / "ref")
        if ref is None or not ref_matches(ref.strip(), digest, namespace):
            continue
        ingest = _with_total(Path(entry.path), ref.strip())
        try:
            written = os.stat(ingest.data_path).st_mtime
        except OSError:
            written = 0.0
        if best is None or written > best[0]:
            best = (written, ingest)
    return best[1] if best else None


def progress(ingest: Ingest) -> IngestProgress | None:
    """How far the ingest has come; None when it is gone (committed or aborted)."""
    try:
        offset = os.stat(ingest.data_path).st_size
    except OSError:
        return None
    started = _read_text(ingest.directory / "startedat")
    updated = _read_text(ingest.directory / "updatedat")
    return IngestProgress(
        offset,
        ingest.total,
        parse_timestamp(started) if started else None,
        parse_timestamp(updated) if updated else None,
    )


async def wait_for_ingest(
    content_root: str | Path,
    digest: Digest | str,
    namespace: str,
    appear: float = APPEAR_TIMEOUT,
    poll: float = 0.02,
) -> Ingest | None:
    """`find_ingest`, polling for up to `appear` seconds; None if none appeared."""
    deadline = anyio.current_time() + appear
    while True:
        found = find_ingest(content_root, digest, namespace)
        if found is not None or anyio.current_time() >= deadline:
            return found
        await anyio.sleep(poll)


def same_file(fd: int, path: str | Path) -> bool:
    """Whether `path` names the file open as `fd` (the ingest's data, committed under its blob name)."""
    try:
        mine, theirs = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


class GrowingBlob:
    """One ingest's `data`, open, followed until it is committed as `blob_path`. `close()` when done."""

    def __init__(self, fd: int, ingest: Ingest, blob_path: Path) -> None:
        self.fd = fd
        self.ingest = ingest
        self.blob_path = blob_path
        self.total = ingest.total

    @classmethod
    def open(cls, ingest: Ingest, blob_path: str | Path) -> GrowingBlob | None:
        """None when the ingest is already gone (committed or aborted: the caller looks at the blob)."""
        try:
            fd = os.open(ingest.data_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        return cls(fd, ingest, Path(blob_path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def written(self) -> int:
        return os.fstat(self.fd).st_size

    def committed(self) -> bool:
        return same_file(self.fd, self.blob_path)

    def abandoned(self) -> bool:
        """The ingest's `data` is gone and was not committed: containerd aborted it."""
        return not self.ingest.data_path.exists() and not self.committed()

    async def follow(
        self,
        start: int,
        length: int,
        *,
        stall: float = STALL_TIMEOUT,
        poll: float = POLL_INTERVAL,
        in_namespace: Callable[[], Awaitable[bool]] | None = None,
    ) -> AsyncIterator[bytes]:
        """The bytes [start, start + length) as containerd writes them. Raises `IngestEnded` when the
        ingest is abandoned or stalls for `stall` seconds. The blob's last byte comes only once the file is
        committed (and, with `in_namespace`, containerd confirms the blob in the namespace)."""
        if self.total <= 0 or start < 0 or length < 0 or start + length > self.total:
            raise IngestEnded(f"range {start}+{length} is outside the ingest's {self.total} bytes")
        position, end = start, start + length
        last_size, last_change = -1, anyio.current_time()
        confirmed = False
        while position < end:
            size = self.written()
            now = anyio.current_time()
            if size != last_size:
                last_size, last_change = size, now
            limit = min(size, end)
            if limit == self.total and not confirmed:
                if self.committed():
                    confirmed = in_namespace is None or await _confirmed(in_namespace)
                if not confirmed:
                    limit -= 1  # the last byte waits for the commit: an abandoned ingest is never whole
            if limit > position:
                data = os.pread(self.fd, min(CHUNK, limit - position), position)
                if not data:
                    raise IngestEnded(f"read nothing at {position} of a {size}-byte file")
                position += len(data)
                yield data
                continue
            if self.abandoned():
                raise IngestEnded(f"the ingest was removed at {size} of {self.total} bytes, uncommitted")
            if now - last_change > stall:
                raise IngestEnded(f"the ingest stalled at {size} of {self.total} bytes for {stall:.0f} s")
            await anyio.sleep(poll)


async def _confirmed(in_namespace: Callable[[], Awaitable[bool]]) -> bool:
    with contextlib.suppress(Exception):
        return await in_namespace()
    return False


class IngestProbe:
    """What one node's content store shows about a key's download: the `DownloadProbe` of the claim
    leases (sidecar/routing/leases.py), over this module's functions. The ingest directory is scanned
    at most once per `rescan` seconds, however many keys are asked about (one lease per miss)."""

    def __init__(
        self,
        content_root: Callable[[], str | None],
        namespace: str,
        indexed: Callable[[str], bool],
        rescan: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._root = content_root
        self.namespace = namespace
        self._indexed = indexed
        self.rescan = rescan
        self.clock = clock
        self._scanned_at = float("-inf")
        self._by_digest: dict[str, Ingest] = {}

    def progress(self, key: str) -> IngestProgress | None:
        found = self._ingests().get(key)
        return progress(found) if found is not None else None

    def committed(self, key: str) -> bool:
        root = self._root()
        algorithm, _, hex_part = key.partition(":")
        if not root or not hex_part:
            return False
        return (Path(root) / "blobs" / algorithm / hex_part).exists()

    def indexed(self, key: str) -> bool:
        return self._indexed(key)

    def _ingests(self) -> dict[str, Ingest]:
        now = self.clock()
        if now - self._scanned_at >= self.rescan:
            self._scanned_at = now
            root = self._root()
            self._by_digest = all_ingests(root, self.namespace) if root else {}
        return self._by_digest


def all_ingests(content_root: str | Path, namespace: str) -> dict[str, Ingest]:
    """Every ingest of `namespace`, by the digest its ref names (`<ns>/<n>/<kind>-<digest>`)."""
    try:
        entries = list(os.scandir(ingest_root(content_root)))
    except OSError:
        return {}
    found: dict[str, Ingest] = {}
    for entry in entries:
        ingest = read_ingest(Path(entry.path))
        digest = ref_digest(ingest.ref, namespace) if ingest is not None else None
        if ingest is not None and digest is not None:
            found[digest] = ingest
    return found
