"""`lokal configure` and `lokal cleanup` as the init containers run them: flags, LOKAL_* variables, exits."""

from __future__ import annotations

import argparse
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.cli import cleanup, configure


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (
        "LOKAL_MIRRORED_REGISTRIES",
        "LOKAL_LISTEN",
        "LOKAL_RESOLVE_TAGS",
        "LOKAL_CONFIG_PATH",
        "LOKAL_PREPEND_EXISTING",
        "LOKAL_UPSTREAM",
        "LOKAL_LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    yield
    logging.getLogger("lokal").handlers.clear()  # setup_logging bound the captured stdout


def lokal(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="lokal")
    subparsers = parser.add_subparsers(dest="command", required=True)
    configure.register(subparsers)
    cleanup.register(subparsers)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


def test_configure_writes_the_registries_given_by_flags(tmp_path: Path) -> None:
    code = lokal(
        "configure",
        "--config-path",
        str(tmp_path),
        "--mirrored-registries",
        "ghcr.io,_default",
        "--listen",
        "0.0.0.0:6000",
        "--no-resolve-tags",
    )
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_default", "ghcr.io"]
    parsed = tomllib.loads((tmp_path / "ghcr.io" / "hosts.toml").read_text())
    assert parsed["host"]["http://127.0.0.1:6000"]["capabilities"] == ["pull"]


def test_configure_reads_lokal_variables_where_flags_are_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOKAL_CONFIG_PATH", str(tmp_path))
    monkeypatch.setenv("LOKAL_MIRRORED_REGISTRIES", "registry.lab:5000")
    monkeypatch.setenv("LOKAL_LISTEN", ":5051")
    monkeypatch.setenv("LOKAL_RESOLVE_TAGS", "false")
    monkeypatch.setenv("LOKAL_UPSTREAM", "registry.lab:5000=http://10.0.0.2:5000")
    assert lokal("configure") == 0
    parsed = tomllib.loads((tmp_path / "registry.lab:5000" / "hosts.toml").read_text())
    assert parsed["server"] == "http://10.0.0.2:5000"
    assert parsed["host"] == {"http://127.0.0.1:5051": {"capabilities": ["pull"], "dial_timeout": "200ms"}}


def test_a_flag_wins_over_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOKAL_MIRRORED_REGISTRIES", "quay.io")
    assert lokal("configure", "--config-path", str(tmp_path), "--mirrored-registries", "ghcr.io") == 0
    assert [p.name for p in tmp_path.iterdir()] == ["ghcr.io"]


def test_configure_defaults_to_the_common_public_registries(tmp_path: Path) -> None:
    assert lokal("configure", "--config-path", str(tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "docker.io",
            "ghcr.io",
            "quay.io",
            "registry.k8s.io",
            "gcr.io",
            "mcr.microsoft.com",
            "public.ecr.aws",
        ]
    )


@pytest.mark.parametrize(
    ("argv", "env", "setting"),
    [
        (["--mirrored-registries", "docker.io,../etc"], {}, "--mirrored-registries"),
        ([], {"LOKAL_MIRRORED_REGISTRIES": "bad name"}, "LOKAL_MIRRORED_REGISTRIES"),
        (["--listen", "0.0.0.0:99999"], {}, "--listen"),
        ([], {"LOKAL_LISTEN": "nonsense"}, "LOKAL_LISTEN"),
        ([], {"LOKAL_RESOLVE_TAGS": "perhaps"}, "LOKAL_RESOLVE_TAGS"),
        (["--upstream", "quay.io=http://x"], {"LOKAL_MIRRORED_REGISTRIES": "ghcr.io"}, "--upstream"),
        ([], {"LOKAL_LOG_FORMAT": "xml"}, "LOKAL_LOG_FORMAT"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_setting_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    setting: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert lokal("configure", "--config-path", str(tmp_path), *argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lokal configure: error: {setting}: ")
    assert list(tmp_path.iterdir()) == []


def test_a_config_path_that_is_a_file_exits_2_naming_the_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "certs.d").write_text("")
    assert lokal("configure", "--config-path", str(tmp_path / "certs.d")) == 2
    assert capsys.readouterr().err.startswith("lokal configure: error: --config-path: ")


def test_cleanup_restores_even_registries_the_variables_no_longer_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert lokal("configure", "--config-path", str(tmp_path), "--mirrored-registries", "ghcr.io,quay.io") == 0
    monkeypatch.setenv("LOKAL_MIRRORED_REGISTRIES", "ghcr.io")
    assert lokal("cleanup", "--config-path", str(tmp_path)) == 0
    assert list(tmp_path.iterdir()) == []
    assert lokal("cleanup", "--config-path", str(tmp_path)) == 0


def test_configure_logs_one_json_event_of_what_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert lokal("configure", "--config-path", str(tmp_path), "--mirrored-registries", "ghcr.io") == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["event"] == "hosts_configured" and line["written"] == ["ghcr.io"]


OPERATOR_REGISTRY = b"""\
server = "https://registry.corp.example:8443"
skip_verify = true

[host."https://registry.corp.example:8443"]
  capabilities = ["pull", "resolve"]
  ca = "corp-ca.crt"
  skip_verify = true
"""


def operator_registry(config_path: Path) -> tuple[Path, list[str]]:
    """The operator's own hosts.toml for one registry, and the configure command line for it."""
    registry = config_path / "registry.corp.example:8443"
    registry.mkdir()
    (registry / "hosts.toml").write_bytes(OPERATOR_REGISTRY)
    return registry, ["configure", "--config-path", str(config_path), "--mirrored-registries", registry.name]


def test_configure_keeps_the_operators_hosts_toml_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry, argv = operator_registry(tmp_path)
    assert lokal(*argv) == 0
    parsed = tomllib.loads((registry / "hosts.toml").read_text())
    assert parsed["server"] == "https://registry.corp.example:8443" and parsed["skip_verify"] is True
    assert list(parsed["host"]) == ["http://127.0.0.1:5050", "https://registry.corp.example:8443"]
    assert parsed["host"]["https://registry.corp.example:8443"]["ca"] == "corp-ca.crt"
    assert "config_warning" not in capsys.readouterr().out


def test_replacing_the_operators_hosts_toml_takes_an_explicit_setting_and_logs_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    registry, argv = operator_registry(tmp_path)
    assert lokal(*argv, "--no-prepend-existing") == 0
    parsed = tomllib.loads((registry / "hosts.toml").read_text())
    assert list(parsed["host"]) == ["http://127.0.0.1:5050"] and "skip_verify" not in parsed
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (warning,) = [line for line in lines if line["event"] == "config_warning"]
    assert warning["level"] == "warning" and registry.name in warning["warning"]
