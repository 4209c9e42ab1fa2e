"""Repository names, tags and registry hosts, as the distribution spec defines them. Pure.

Rules:
- Names follow distribution's grammar: lowercase path components separated by `/`, at most 255 characters.
  This also rules out `..`, empty components and anything that could escape a path.
- A reference in a manifest URL is either a digest or a tag; `parse_reference` says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.oci.digest import Digest, parse_digest

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# A registry host as containerd names it: DNS name or IPv4, optional port, or bracketed IPv6.
_HOST = re.compile(
    r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?))*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
MAX_NAME_LENGTH = 255


class InvalidReference(ValueError):
    """A repository name, tag or registry host that the distribution grammar rejects."""


@dataclass(frozen=True, slots=True)
class Tag:
    value: str

    def __str__(self) -> str:
        return self.value


def is_repository_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _NAME.fullmatch(name) is not None


def is_tag(text: str) -> bool:
    return _TAG.fullmatch(text) is not None


def is_registry_host(text: str) -> bool:
    return len(text) <= 255 and _HOST.fullmatch(text) is not None


def parse_reference(text: str) -> Digest | Tag:
    """A manifest reference: a digest if it has the digest shape's colon, otherwise a tag."""
    if ":" in text:
        return parse_digest(text)  # raises InvalidDigest
    if not is_tag(text):
        raise InvalidReference(f"invalid tag {text[:80]!r}")
    return Tag(text)


def tag_key(registry: str, repository: str, tag: str) -> str:
    """The index key of a tag, also containerd's image name: `<registry>/<repository>:<tag>`."""
    return f"{registry}/{repository}:{tag}"


def split_image_name(name: str) -> tuple[str, str, str] | None:
    """Split a containerd image name `<registry>/<repo>:<tag>` into its parts; None for other shapes
    (digest references such as `repo@sha256:...`, or bare config digests)."""
    if "@" in name or "/" not in name:
        return None
    registry, _, rest = name.partition("/")
    repository, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        return None
    if not (is_registry_host(registry) and is_repository_name(repository) and is_tag(tag)):
        return None
    return registry, repository, tag
