from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sidecar.security import Gate, LimitReporter, PeerTokens, TokenFileError
from sidecar.security.tokens import TOKEN_HEADER

OLD = "old-token-0123456789abcdef"
NEW = "new-token-fedcba9876543210"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_any_listed_token_is_accepted_and_the_first_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# rotation in progress\n{NEW}\n\n{OLD}\n")
    tokens = PeerTokens(str(path))
    assert tokens.accepts(NEW) and tokens.accepts(OLD)
    assert not tokens.accepts(None) and not tokens.accepts("") and not tokens.accepts(OLD[:-1])
    assert tokens.header == (TOKEN_HEADER, NEW)


@pytest.mark.parametrize("content", ["", "# only a comment\n", "short\n"])
def test_an_unusable_token_file_is_an_error_naming_the_setting(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(TokenFileError, match="--peer-token-file"):
        PeerTokens(str(path))
    with pytest.raises(TokenFileError, match="--peer-token-file"):
        PeerTokens(str(tmp_path / "missing"))


def test_a_rotated_file_is_picked_up_and_a_broken_one_keeps_the_last_good_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(OLD + "\n")
    clock = Clock()
    tokens = PeerTokens(str(path), recheck_s=10, clock=clock)
    replacement = tmp_path / "tokens.new"
    replacement.write_text(NEW + "\n")
    replacement.replace(path)  # a kubelet Secret update swaps the file
    assert tokens.accepts(OLD)  # not re-read before recheck_s
    clock.now = 11
    assert tokens.accepts(NEW) and not tokens.accepts(OLD)
    broken = tmp_path / "tokens.broken"
    broken.write_text("")
    broken.replace(path)
    clock.now = 22
    assert tokens.accepts(NEW)


def test_a_gate_refuses_past_capacity_and_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    hits: list[str] = []
    reporter = LimitReporter(interval_s=60, clock=clock, on_hit=hits.append)
    gate = Gate("relays", 2, reporter)
    assert gate.try_enter() and gate.try_enter()
    with caplog.at_level(logging.WARNING, logger="lokal.limits"):
        for _ in range(5):
            assert not gate.try_enter()
        clock.now = 61
        assert not gate.try_enter()
    logged = [r for r in caplog.records if r.getMessage() == "limit_reached"]
    assert len(logged) == 2
    assert [r.lokal_fields["hits"] for r in logged] == [1, 5]
    assert hits == ["relays"] * 6 and reporter.totals == {"relays": 6}
    gate.leave()
    assert gate.try_enter()


def test_limit_log_lines_are_json_and_carry_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sidecar.logs import setup_logging

    setup_logging("json")
    Gate("peer_uploads", 0, LimitReporter()).try_enter(client="10.0.0.1")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["event"] == "limit_reached" and line["limit"] == "peer_uploads" and line["capacity"] == 0
