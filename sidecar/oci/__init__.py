"""OCI grammar and documents: digests, references, media types, manifest walking, error bodies. Pure."""

from sidecar.oci.digest import Digest, InvalidDigest, digest_of, is_digest, parse_digest
from sidecar.oci.errors import ErrorCode, error_body, oci_error
from sidecar.oci.manifest import Descriptor, children
from sidecar.oci.mediatypes import ALL_MANIFEST_TYPES, NotAManifest, load_manifest
from sidecar.oci.reference import (
    ImageReference,
    InvalidReference,
    Tag,
    is_registry_host,
    is_repository_name,
    parse_image_reference,
    parse_reference,
    split_image_name,
    tag_key,
)

__all__ = [
    "ALL_MANIFEST_TYPES",
    "Descriptor",
    "Digest",
    "ErrorCode",
    "ImageReference",
    "InvalidDigest",
    "InvalidReference",
    "NotAManifest",
    "Tag",
    "children",
    "digest_of",
    "error_body",
    "is_digest",
    "is_registry_host",
    "is_repository_name",
    "load_manifest",
    "oci_error",
    "parse_digest",
    "parse_image_reference",
    "parse_reference",
    "split_image_name",
    "tag_key",
]
