"""Validation of the hosts settings: every refusal names the setting it came from."""

from __future__ import annotations

import pytest

from sidecar.hosts import SettingError, parse_bool, parse_listen, parse_registries, parse_upstreams


@pytest.mark.parametrize(
    "value",
    ["docker.io", "localhost:5000", "_default", "my-registry.corp.example.com:443", "10.0.0.5:5000"],
)
def test_registry_names_and_ports_are_accepted(value: str) -> None:
    assert parse_registries(value, "--mirrored-registries") == (value,)


@pytest.mark.parametrize(
    "value",
    [
        "../etc",
        "docker.io/library",
        "-bad.io",
        "bad-.io",
        "a..b",
        "reg:0",
        "reg:70000",
        "reg:",
        "_other",
        " ",
    ],
)
def test_names_that_are_not_registry_hosts_are_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(SettingError, match=r"^LOKAL_MIRRORED_REGISTRIES: "):
        parse_registries(value, "LOKAL_MIRRORED_REGISTRIES")


def test_registry_list_is_split_on_commas_trimmed_and_deduplicated_in_order() -> None:
    assert parse_registries(" ghcr.io, docker.io ,ghcr.io,_default", "x") == (
        "ghcr.io",
        "docker.io",
        "_default",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:5050", ("0.0.0.0", 5050)),
        (":5050", ("0.0.0.0", 5050)),  # an empty host: every address
        ("[::]:6000", ("::", 6000)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_listen_values_reachable_on_loopback_are_accepted(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value, "--listen") == expected


@pytest.mark.parametrize(
    "value",
    [
        "5050",
        "0.0.0.0:",
        "0.0.0.0:http",
        "0.0.0.0:0",
        "0.0.0.0:65536",
        "example.com:5050",
        "10.0.0.5:5050",
        "[::1]:5050",
    ],
)
def test_bad_listen_values_are_refused_naming_the_setting(value: str) -> None:
    with pytest.raises(SettingError, match=r"^--listen: "):
        parse_listen(value, "--listen")


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("False", False), ("no", False)]
)
def test_booleans_are_read_from_common_spellings(value: str, expected: bool) -> None:
    assert parse_bool(value, "LOKAL_RESOLVE_TAGS") is expected


def test_a_bool_that_is_neither_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingError, match=r"^LOKAL_RESOLVE_TAGS: 'maybe'"):
        parse_bool("maybe", "LOKAL_RESOLVE_TAGS")


def test_upstream_overrides_map_registries_to_urls() -> None:
    assert parse_upstreams(["docker.io=http://10.1.0.2:5000/"], ["docker.io"], "--upstream") == {
        "docker.io": "http://10.1.0.2:5000"
    }


@pytest.mark.parametrize(
    "entry",
    [
        "docker.io",
        "docker.io=ftp://x",
        "docker.io=http://",
        "ghcr.io=https://x",
        "docker.io=http://a b",
        "docker.io=http://u:p@x",
        "_default=http://x",
        "docker.io=http://x:99999",
    ],
)
def test_bad_upstream_overrides_are_refused_naming_the_setting(entry: str) -> None:
    with pytest.raises(SettingError, match=r"^--upstream: "):
        parse_upstreams([entry], ["docker.io", "_default"], "--upstream")
