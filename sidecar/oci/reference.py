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


@dataclass(frozen=True, slots=True)
class ImageReference:
    """`registry/repository[:tag][@digest]`; a bare digest has an empty registry and repository."""

    registry: str
    repository: str
    tag: str | None
    digest: Digest | None


def parse_image_reference(text: str, default_registry: str | None = None) -> ImageReference:
    """An image reference, the one grammar for containerd's image names and the operator's arguments.

    With `default_registry`, as docker reads a name typed by a person: the first component is a registry
    only if it looks like a host (a dot, a port, or `localhost`), docker.io's one-component names get
    `library/`, and a name with neither tag nor digest means `latest`; `sha256:...` alone is a digest.
    Without it, as containerd names images: the first component is always the registry.
    Raises InvalidReference (or InvalidDigest) naming the bad part."""
    if default_registry is not None and (text.startswith("sha256:") or text.startswith("sha512:")):
        return ImageReference("", "", None, parse_digest(text))
    name, _, digest_text = text.partition("@")
    digest = parse_digest(digest_text) if digest_text else None
    tag: str | None = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, _, tag = name.rpartition(":")
        if not is_tag(tag):
            raise InvalidReference(f"invalid tag {tag[:80]!r}")
    first, slash, rest = name.partition("/")
    if default_registry is None:
        if not slash:
            raise InvalidReference(f"{text[:80]!r} names no registry")
        registry, repository = first, rest
    elif slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = default_registry, name
        if registry == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
    if not is_registry_host(registry):
        raise InvalidReference(f"invalid registry {registry[:80]!r}")
    if not is_repository_name(repository):
        raise InvalidReference(f"invalid repository name {repository[:80]!r}")
    if default_registry is not None and digest is None and tag is None:
        tag = "latest"
    return ImageReference(registry, repository, tag, digest)


def split_image_name(name: str) -> tuple[str, str, str] | None:
    """A containerd image name `<registry>/<repo>:<tag>` as its parts; None for other shapes (digest
    references such as `repo@sha256:...`, or bare config digests)."""
    try:
        reference = parse_image_reference(name)
    except ValueError:
        return None
    if reference.tag is None or reference.digest is not None:
        return None
    return reference.registry, reference.repository, reference.tag
