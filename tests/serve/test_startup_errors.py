"""Start-up failures an operator can fix are one line naming the setting, exit code 2, and a JSON log line;
never a traceback (issue 15, item 12)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sidecar", "serve", "--discovery", "none",
            "--containerd-socket", str(tmp_path / "containerd.sock"), *args]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (["--listen", "127.0.0.1:{port}"], {}, "--listen"),
        ([], {"LOKAL_LISTEN": "127.0.0.1:{port}"}, "LOKAL_LISTEN"),
        (["--listen", "127.0.0.1:{free}", "--metrics-listen", "127.0.0.1:{port}"], {}, "--metrics-listen"),
        (["--listen", "127.0.0.1:{free}", "--metrics-listen", "192.0.2.1:9090"], {}, "--metrics-listen"),
    ],
    ids=["busy-listen", "busy-listen-env", "busy-metrics-listen", "foreign-metrics-address"],
)
def test_an_address_that_cannot_be_listened_on_is_one_line_naming_the_setting(
    tmp_path: Path, busy_port: int, flags: list[str], env: dict[str, str], named: str
) -> None:
    free = free_port()
    result = serve(tmp_path, *(f.format(port=busy_port, free=free) for f in flags),
                   env={k: v.format(port=busy_port) for k, v in env.items()})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"lokal serve: {named}: cannot listen")
    events = [json.loads(text) for text in result.stdout.splitlines() if text.startswith("{")]
    assert any(e["event"] == "configuration_error" and named in e["error"] for e in events)


def test_a_host_name_for_listen_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = serve(tmp_path, "--listen", "no-such-host.invalid:5050")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("lokal serve: --listen: 'no-such-host.invalid:5050'")
