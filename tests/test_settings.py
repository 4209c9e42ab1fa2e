"""The settings model as an operator meets it (issue 16, part 1): booleans are bare switches with `--no-`
forms, choices are listed and case-insensitive, an empty variable is unset in every command, a flag wins
over the variable, and a bad value names where it came from."""

from __future__ import annotations

import argparse

import pytest

from sidecar.cli import build_parser
from sidecar.hosts.settings import SettingError
from sidecar.membership import TopologyMode
from sidecar.settings import CleanupSettings, ConfigureSettings, LogLevel, ServeSettings, read


def parsed(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_booleans_are_bare_switches_with_no_forms() -> None:
    assert read(ServeSettings, parsed("serve", "--allow-unknown-clients"), {}).allow_unknown_clients
    assert not read(ServeSettings, parsed("serve", "--no-resolve-tags"), {}).resolve_tags
    with pytest.raises(SystemExit):  # a value after a switch is not a value
        parsed("serve", "--allow-unknown-clients", "true")
    assert read(ConfigureSettings, parsed("configure", "--no-prepend-existing"), {}).prepend_existing is False


def test_choices_are_listed_in_help_and_read_in_any_case(capsys: pytest.CaptureFixture[str]) -> None:
    assert read(ServeSettings, parsed("serve", "--log-level", "DEBUG"), {}).log_level is LogLevel.DEBUG
    assert read(ServeSettings, env={"LOKAL_TOPOLOGY_MODE": "Prefer"}).topology_mode is TopologyMode.PREFER
    with pytest.raises(SystemExit):
        parsed("serve", "--help")
    shown = capsys.readouterr().out
    assert "{isolate,prefer}" in shown and "--no-allow-unknown-clients" in shown


def test_an_empty_variable_is_unset_in_every_command() -> None:
    env = {"LOKAL_LISTEN": "", "LOKAL_CONFIG_PATH": " ", "LOKAL_LOG_FORMAT": ""}
    for model in (ServeSettings, ConfigureSettings, CleanupSettings):
        settings = read(model, env=env)
        assert settings.config_path == "/etc/containerd/certs.d"


def test_a_flag_wins_over_the_variable_and_a_bad_value_names_its_source() -> None:
    env = {"LOKAL_MAX_RELAYS": "7"}
    assert read(ServeSettings, parsed("serve", "--max-relays", "9"), env).max_relays == 9
    assert read(ServeSettings, env=env).max_relays == 7
    with pytest.raises(SettingError, match=r"^LOKAL_MAX_RELAYS: "):
        read(ServeSettings, env={"LOKAL_MAX_RELAYS": "0"})
    with pytest.raises(SettingError, match=r"^--drain-timeout: "):
        read(ServeSettings, parsed("serve", "--drain-timeout", "soon"), {})


def test_serve_and_configure_read_listen_the_same_way() -> None:
    for model in (ServeSettings, ConfigureSettings):
        assert read(model, env={"LOKAL_LISTEN": "[::]:6000"}).listen == ("::", 6000)
        with pytest.raises(SettingError, match=r"^LOKAL_LISTEN: .*127\.0\.0\.1"):
            read(model, env={"LOKAL_LISTEN": "10.0.0.1:5050"})
