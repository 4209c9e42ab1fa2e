"""HTTP Range for blobs: one byte range, as containerd sends to resume (`bytes=N-`). Pure.

Rules:
- One range of the forms `a-b`, `a-`, `-n` is honoured with 206. Several ranges, or another unit, are
  ignored (RFC 9110 allows it) and the whole blob is sent with 200.
- A syntactically valid range that the blob cannot satisfy is 416 with `Content-Range: bytes */size`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(ValueError):
    pass


def continues_a_body(header: str | None) -> bool:
    """A single range that starts past byte 0 (`bytes=N-`, N > 0): a resume or one of several parallel
    chunks, not a first request for the body. A suffix range (`-n`) also starts past the first byte."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None:
        return False
    first, last = match.groups()
    return (bool(first) and int(first) > 0) or (not first and bool(last))


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to serve, None for the whole blob; raises Unsatisfiable for 416."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # multiple ranges or another unit: ignore, serve it whole
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid per RFC 9110: ignore the header
    if start >= size:
        raise Unsatisfiable(header)
    end = int(last) if last else size - 1
    return ByteRange(start, min(end, size - 1))
