from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.oci import (
    InvalidDigest,
    InvalidReference,
    Tag,
    children,
    digest_of,
    is_repository_name,
    parse_digest,
    parse_reference,
    split_image_name,
)
from sidecar.oci.mediatypes import DOCKER_MANIFEST, OCI_INDEX, NotAManifest, load_manifest

HEX64 = "a" * 64


def test_a_sha256_and_a_sha512_digest_parse() -> None:
    assert str(parse_digest(f"sha256:{HEX64}")) == f"sha256:{HEX64}"
    assert parse_digest("sha512:" + "0" * 128).algorithm == "sha512"


@pytest.mark.parametrize(
    "text",
    [
        f"sha256:{HEX64.upper()}",
        f"sha256:{HEX64}0",
        f"sha256:{HEX64[:-1]}",
        f"md5:{HEX64}",
        f"sha256:../../{HEX64[6:]}",
        f" sha256:{HEX64}",
        f"sha256:{HEX64}\n",
        "sha512:" + "0" * 64,
        "",
    ],
)
def test_anything_but_the_exact_digest_grammar_is_rejected(text: str) -> None:
    with pytest.raises(InvalidDigest):
        parse_digest(text)


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_a_parsed_digest_never_holds_a_path_separator_or_dot(text: str) -> None:
    try:
        digest = parse_digest(text)
    except InvalidDigest:
        return
    assert "/" not in digest.hex and "." not in digest.hex and digest.hex.isalnum()


def test_references_are_tags_or_digests() -> None:
    assert parse_reference("v1.2_3-rc") == Tag("v1.2_3-rc")
    assert parse_reference(f"sha256:{HEX64}") == parse_digest(f"sha256:{HEX64}")
    with pytest.raises(InvalidReference):
        parse_reference("-bad")
    with pytest.raises(InvalidDigest):
        parse_reference("sha256:short")


@pytest.mark.parametrize("name", ["library/nginx", "a", "my-org/sub.repo/x__y", "a" * 255])
def test_valid_repository_names(name: str) -> None:
    assert is_repository_name(name)


@pytest.mark.parametrize("name", ["", "Upper/case", "a/../b", "/abs", "a//b", "a/", "-a", "a" * 256])
def test_invalid_repository_names(name: str) -> None:
    assert not is_repository_name(name)


def test_image_names_split_into_registry_repository_and_tag() -> None:
    assert split_image_name("docker.io/library/nginx:1.27") == ("docker.io", "library/nginx", "1.27")
    assert split_image_name("localhost:5000/a/b:v1") == ("localhost:5000", "a/b", "v1")
    assert split_image_name(f"docker.io/library/nginx@sha256:{HEX64}") is None
    assert split_image_name(f"sha256:{HEX64}") is None


def test_manifest_media_type_comes_from_the_json_or_its_shape() -> None:
    assert load_manifest(b'{"mediaType":"%s","config":{},"layers":[]}' % DOCKER_MANIFEST.encode())[0] == (
        DOCKER_MANIFEST
    )
    assert load_manifest(b'{"schemaVersion":2,"manifests":[]}')[0] == OCI_INDEX
    for bad in (b"[]", b"not json", b'{"mediaType":"text/plain"}', b'{"schemaVersion":2}'):
        with pytest.raises(NotAManifest):
            load_manifest(bad)


def test_children_of_a_manifest_are_its_config_then_layers() -> None:
    config, layer = digest_of(b"config"), digest_of(b"layer")
    doc = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": "c", "digest": str(config), "size": 6},
            "layers": [{"mediaType": "l", "digest": str(layer), "size": 5}],
        }
    ).encode()
    _, descriptors = children(doc)
    assert [d.digest for d in descriptors] == [config, layer]
    with pytest.raises(NotAManifest):
        children(b'{"schemaVersion":2,"config":{"digest":"sha256:x","mediaType":"c","size":1},"layers":[]}')
