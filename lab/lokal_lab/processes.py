"""Processes the lab starts, and how they are stopped: by PID, never by name.

Rules:
- Every process is started through `start_process`, which records its PID in a `ProcessGroup`.
- `ProcessGroup.stop_all` stops them in reverse order (SIGTERM, then SIGKILL after a grace period), and is
  safe to call twice. Use the group as a context manager so that teardown runs on failure too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


class ProcessGroup:
    """The processes one lab or test started."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        netns: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` (inside network namespace `netns` if given), its output going to `log_path`."""
        full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,  # its own process group: a Ctrl-C here does not reach it twice
            )
        finally:
            if log_path:
                out.close()  # type: ignore[union-attr]
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """Stop one process of this group by its PID: SIGTERM, then SIGKILL."""
        stop_pid(proc, grace)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self, grace: float = 5.0) -> None:
        while self._procs:
            _, proc = self._procs.pop()
            stop_pid(proc, grace)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()


def stop_pid(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process we started, wait up to `grace` seconds, then SIGKILL it."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def wait_for(predicate: object, timeout: float, interval: float = 0.02, what: str = "condition") -> None:
    """Poll `predicate()` until it is true; raise TimeoutError naming `what` otherwise."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
