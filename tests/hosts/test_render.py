"""The hosts.toml renderer: golden files (the shipped examples) and the structure, read back with tomllib."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from sidecar.hosts import (
    DEFAULT_REGISTRIES,
    ExistingHostsError,
    HostsSettings,
    config_path_includes,
    is_lokal_file,
    parse_existing,
    render_hosts_toml,
)
from sidecar.hosts.toml_writer import TomlWriteError

EXAMPLES = Path(__file__).resolve().parents[2] / "hosts" / "examples"
LOKAL = "http://127.0.0.1:5050"

# example directory -> (registry, settings, operator file in that directory or None)
GOLDEN_CASES: dict[str, tuple[str, HostsSettings, str | None]] = {
    "docker.io": ("docker.io", HostsSettings(listen_port=5050), None),
    "quay.io-no-resolve-tags": ("quay.io", HostsSettings(listen_port=5050, resolve_tags=False), None),
    "_default": ("_default", HostsSettings(listen_port=5050, registries=("_default",)), None),
    "lab-upstream": (
        "registry.lab",
        HostsSettings(
            listen_port=5050,
            registries=("registry.lab",),
            upstreams={"registry.lab": "http://10.11.0.2:5000"},
        ),
        None,
    ),
    "prepend-existing": (
        "registry.example.com",
        HostsSettings(listen_port=5050, registries=("registry.example.com",), prepend_existing=True),
        "operator-hosts.toml",
    ),
}


def _render_case(case: str) -> str:
    registry, settings, operator_file = GOLDEN_CASES[case]
    existing = None
    if operator_file is not None:
        existing = parse_existing((EXAMPLES / case / operator_file).read_text(), operator_file)
    return render_hosts_toml(registry, settings, existing)


def test_every_shipped_example_has_a_golden_case() -> None:
    assert sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir()) == sorted(GOLDEN_CASES)


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_shipped_example_matches_the_renderer_byte_for_byte(case: str) -> None:
    assert _render_case(case) == (EXAMPLES / case / "hosts.toml").read_text()


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_rendered_file_parses_back_with_lokal_as_the_first_host(case: str) -> None:
    text = _render_case(case)
    parsed = tomllib.loads(text)
    assert next(iter(parsed["host"])) == LOKAL
    assert parsed["host"][LOKAL]["dial_timeout"] == "200ms"
    assert is_lokal_file(text)


@pytest.mark.parametrize("registry", [*DEFAULT_REGISTRIES, "_default", "localhost:5000"])
def test_no_rendered_file_is_a_server_without_a_host_table(registry: str) -> None:
    # containerd 1.6.20 rejects that shape and silently falls back to its defaults.
    parsed = tomllib.loads(render_hosts_toml(registry, HostsSettings(listen_port=5050)))
    assert list(parsed["host"]) == [LOKAL]


def test_docker_io_points_its_server_at_registry_1() -> None:
    parsed = tomllib.loads(render_hosts_toml("docker.io", HostsSettings(listen_port=5050)))
    assert parsed["server"] == "https://registry-1.docker.io"


@pytest.mark.parametrize("registry", ["ghcr.io", "public.ecr.aws", "localhost:5000"])
def test_other_registries_point_their_server_at_https_of_their_name(registry: str) -> None:
    parsed = tomllib.loads(render_hosts_toml(registry, HostsSettings(listen_port=5050)))
    assert parsed["server"] == f"https://{registry}"


def test_default_directory_has_no_server_so_containerd_uses_the_pulled_registry() -> None:
    parsed = tomllib.loads(render_hosts_toml("_default", HostsSettings(listen_port=5050)))
    assert "server" not in parsed


@pytest.mark.parametrize(("resolve_tags", "capabilities"), [(True, ["pull", "resolve"]), (False, ["pull"])])
def test_lokal_may_resolve_tags_only_when_tag_resolution_is_on(
    resolve_tags: bool, capabilities: list[str]
) -> None:
    settings = HostsSettings(listen_port=5050, resolve_tags=resolve_tags)
    parsed = tomllib.loads(render_hosts_toml("ghcr.io", settings))
    assert parsed["host"][LOKAL]["capabilities"] == capabilities


def test_mirror_url_is_always_loopback_with_the_listen_port() -> None:
    parsed = tomllib.loads(render_hosts_toml("ghcr.io", HostsSettings(listen_port=6123)))
    assert list(parsed["host"]) == ["http://127.0.0.1:6123"]


def test_upstream_override_replaces_the_server() -> None:
    settings = HostsSettings(listen_port=5050, upstreams={"ghcr.io": "http://10.0.0.1:5000"})
    assert tomllib.loads(render_hosts_toml("ghcr.io", settings))["server"] == "http://10.0.0.1:5000"


OPERATOR_FILE = """\
server = "https://registry.example.com"
ca = "registry-ca.crt"
skip_verify = false

[header]
X-Top = ["a", "b"]

[host."https://mirror-a.example.com"]
capabilities = ["pull"]
ca = ["/etc/ssl/mirror-a.pem", "mirror-a-extra.crt"]
client = [["client.cert", "client.key"]]

[host."https://mirror-a.example.com".header]
Authorization = "Basic Zm9vOmJhcg=="

[host."http://127.0.0.1:5050"]
capabilities = ["pull"]

[host."https://mirror-b.example.com/v2/sub"]
override_path = true
"""


def test_prepend_keeps_the_operator_mirrors_in_order_after_lokal_with_their_certificates() -> None:
    existing = parse_existing(OPERATOR_FILE, "hosts.toml")
    text = render_hosts_toml("registry.example.com", HostsSettings(listen_port=5050), existing)
    parsed = tomllib.loads(text)
    assert list(parsed["host"]) == [
        LOKAL,
        "https://mirror-a.example.com",
        "https://mirror-b.example.com/v2/sub",
    ]
    mirror_a = parsed["host"]["https://mirror-a.example.com"]
    assert mirror_a["ca"] == ["/etc/ssl/mirror-a.pem", "mirror-a-extra.crt"]
    assert mirror_a["client"] == [["client.cert", "client.key"]]
    assert mirror_a["header"] == {"Authorization": "Basic Zm9vOmJhcg=="}
    assert parsed["host"]["https://mirror-b.example.com/v2/sub"] == {"override_path": True}


def test_prepend_keeps_the_operator_server_and_its_settings() -> None:
    existing = parse_existing(OPERATOR_FILE, "hosts.toml")
    parsed = tomllib.loads(
        render_hosts_toml("registry.example.com", HostsSettings(listen_port=5050), existing)
    )
    assert parsed["server"] == "https://registry.example.com"
    assert parsed["ca"] == "registry-ca.crt"
    assert parsed["skip_verify"] is False
    assert parsed["header"] == {"X-Top": ["a", "b"]}


def test_prepend_never_lists_lokal_twice() -> None:
    existing = parse_existing(OPERATOR_FILE, "hosts.toml")
    parsed = tomllib.loads(
        render_hosts_toml("registry.example.com", HostsSettings(listen_port=5050), existing)
    )
    assert parsed["host"][LOKAL]["capabilities"] == ["pull", "resolve"]  # lokal's own entry, not the old one
    assert list(parsed["host"]).count(LOKAL) == 1


def test_upstream_override_wins_over_the_operator_server() -> None:
    existing = parse_existing(OPERATOR_FILE, "hosts.toml")
    settings = HostsSettings(listen_port=5050, upstreams={"registry.example.com": "http://10.0.0.9:5000"})
    assert tomllib.loads(render_hosts_toml("registry.example.com", settings, existing))["server"] == (
        "http://10.0.0.9:5000"
    )


def test_awkward_strings_in_operator_tables_round_trip_through_tomllib() -> None:
    awkward = 'quote " backslash \\ tab \t newline \n del \x7f unicode é 🐳'
    header_line = '"X-Odd key" = ' + _basic_string(awkward)
    existing = parse_existing(
        '[host."https://m.example.com"]\n[host."https://m.example.com".header]\n' + header_line + "\n",
        "hosts.toml",
    )
    parsed = tomllib.loads(render_hosts_toml("m.example.com", HostsSettings(listen_port=5050), existing))
    assert parsed["host"]["https://m.example.com"]["header"] == {"X-Odd key": awkward}


def _basic_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def test_operator_values_toml_cannot_write_are_refused() -> None:
    existing = parse_existing('[host."https://m.example.com"]\nwhen = 1979-05-27\n', "hosts.toml")
    with pytest.raises(TomlWriteError):
        render_hosts_toml("m.example.com", HostsSettings(listen_port=5050), existing)


@pytest.mark.parametrize(
    "text",
    ["server = \n", 'server = 5\n[host."x"]\n', 'host = "not a table"\n', "host = { a = 1 }\n"],
)
def test_unusable_operator_file_is_refused_with_its_path(text: str) -> None:
    with pytest.raises(ExistingHostsError, match=r"^/etc/containerd/certs.d/x/hosts.toml: "):
        parse_existing(text, "/etc/containerd/certs.d/x/hosts.toml")


@pytest.mark.parametrize(
    ("config_path", "expected"),
    [
        ("", False),
        ("/etc/containerd/certs.d", True),
        ("/etc/containerd/certs.d/", True),
        ("/etc/containerd/certs.d:/etc/docker/certs.d", True),
        ("/etc/docker/certs.d", False),
        ("/etc/containerd", False),
    ],
)
def test_config_path_includes_the_directory_only_when_listed(config_path: str, expected: bool) -> None:
    assert config_path_includes(config_path, "/etc/containerd/certs.d") is expected
