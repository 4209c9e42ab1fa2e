"""Digest grammar. The only door through which request text can become part of a file path.

Rules:
- Accept exactly `sha256:` + 64 lowercase hex, or `sha512:` + 128 lowercase hex. Nothing else, no
  normalisation: an uppercase or padded digest is a different (invalid) string to containerd too.
- A `Digest` can only be made by `parse_digest`, so holding one means it was validated.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128})")


class InvalidDigest(ValueError):
    """The text is not a digest lokal accepts."""


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        """A short form for logs: algorithm and the first 12 hex characters."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def parse_digest(text: str) -> Digest:
    match = _DIGEST.fullmatch(text)
    if match is None:
        raise InvalidDigest(f"invalid digest {text[:80]!r}: want sha256:<64 hex> or sha512:<128 hex>")
    algorithm = match.group(1) or match.group(3)
    hex_part = match.group(2) or match.group(4)
    return Digest(algorithm, hex_part)


def is_digest(text: str) -> bool:
    return _DIGEST.fullmatch(text) is not None


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    if algorithm not in _HEX_LENGTH:
        raise InvalidDigest(f"unsupported digest algorithm {algorithm!r}")
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())
