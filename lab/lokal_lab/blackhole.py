"""The root namespace's blackhole route for the lab range, shared by every live lab on the machine.

Rules:
- `acquire` runs before a lab creates anything, `release` after it deleted everything, on failure too.
- The route is added if missing, and removed only when no live lab still needs it and a lab added it:
  a blackhole route that an administrator put there is never removed.
- Bookkeeping lives under /run/lokal-lab/ (tmpfs: gone after a reboot, like the route): one file per live lab
  holding its PID, and a marker saying "a lab added the route". All changes happen under an flock.
- A lab file whose PID is dead (a lab that was SIGKILLed) does not keep the route alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lokal_lab.netplan import LAB_RANGE
from sidecar.logs import get_logger, log_event

STATE_DIR = Path("/run/lokal-lab")
_MARKER = "blackhole-added-by-lab"
_log = get_logger("lab")


def acquire(lab_id: str, state_dir: Path = STATE_DIR) -> None:
    """Register lab `lab_id` and make sure the blackhole route exists."""
    with _locked(state_dir):
        (state_dir / f"{lab_id}.lab").write_text(str(os.getpid()))
        if not route_present():
            _ip_route("add")
            (state_dir / _MARKER).write_text(lab_id)
            log_event(_log, "lab_blackhole_added", range=str(LAB_RANGE))


def release(lab_id: str, state_dir: Path = STATE_DIR) -> None:
    """Unregister lab `lab_id`; remove the route if no live lab remains and a lab added it."""
    with _locked(state_dir):
        (state_dir / f"{lab_id}.lab").unlink(missing_ok=True)
        if live_labs(state_dir):
            return
        marker = state_dir / _MARKER
        if marker.exists():
            if route_present():
                _ip_route("del")
                log_event(_log, "lab_blackhole_removed", range=str(LAB_RANGE))
            marker.unlink()


def live_labs(state_dir: Path = STATE_DIR) -> list[str]:
    """Ids of labs whose process is still alive; files of dead ones are removed."""
    alive = []
    for path in state_dir.glob("*.lab"):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            pid = -1
        if pid > 0 and _pid_alive(pid):
            alive.append(path.stem)
        else:
            path.unlink(missing_ok=True)
    return alive


def route_present() -> bool:
    out = subprocess.run(
        ["ip", "route", "show", "type", "blackhole", str(LAB_RANGE)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    return str(LAB_RANGE) in out


def _ip_route(action: str) -> None:
    subprocess.run(
        ["ip", "route", action, "blackhole", str(LAB_RANGE)], check=True, capture_output=True, timeout=10
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
