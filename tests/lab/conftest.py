"""Shared fixtures of the lab tests: skip without root or `ip netns`, and check nothing is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lokal_lab.network import Lab, lab_unavailable_reason
from lokal_lab.processes import wait_for

from tests.conftest import skip_or_fail

ECHO = Path(__file__).with_name("echo.py")
_REASON = lab_unavailable_reason()


def require_lab() -> None:
    if _REASON:
        skip_or_fail(f"lab tests need network namespaces: {_REASON}")


def netns_names() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="session", autouse=True)
def _one_event_loop_for_the_session() -> Iterator[None]:
    """Overrides the root conftest's async session fixture: these tests are synchronous, and a sync test
    cannot use an async autouse fixture (pytest errors out at setup)."""
    yield


@pytest.fixture(scope="session", autouse=True)
def no_namespace_of_this_run_is_left() -> Iterator[None]:
    """Every lab namespace this pytest process created is gone when the run ends."""
    yield
    if _REASON is None:
        mine = sorted(n for n in netns_names() if n.startswith(f"lk{os.getpid()}"))
        assert mine == [], f"namespaces left behind: {mine}"


def start_echo_server(lab: Lab, host: str, addr: str, port: int, connections: int) -> subprocess.Popen[bytes]:
    """An echo server inside `host`'s namespace that serves `connections` connections then exits."""
    ready = lab.work_dir / f"echo-{host}-{port}.ready"
    ready.unlink(missing_ok=True)
    proc = lab.start(
        host,
        f"echo-{port}",
        [sys.executable, str(ECHO), "serve", addr, str(port), str(ready), str(connections)],
    )
    wait_for(lambda: ready.exists() or proc.poll() is not None, 10, what=f"echo server in {host}")
    assert proc.poll() is None, f"echo server in {host} exited {proc.returncode}"
    return proc


def echo_send(lab: Lab, host: str, addr: str, port: int, nbytes: int) -> dict[str, float]:
    """Send `nbytes` from inside `host`'s namespace and read them back; the client's JSON report."""
    started = time.monotonic()
    proc = lab.run(host, [sys.executable, str(ECHO), "send", addr, str(port), str(nbytes)], timeout=60)
    report: dict[str, float] = json.loads(proc.stdout)
    report["wall_seconds"] = time.monotonic() - started
    return report
