"""Run `lokal serve` as a real process for end-to-end tests, and talk to it over loopback."""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

from lokal_lab.processes import ProcessGroup, wait_for
from lokal_lab.registry import free_port


class LokalProcess:
    def __init__(self, group: ProcessGroup, log_path: Path, *args: str, netns: str | None = None) -> None:
        self.port = free_port()
        self.log_path = log_path
        argv = [sys.executable, "-m", "sidecar", "serve", "--listen", f"127.0.0.1:{self.port}", *args]
        self.proc = group.start("lokal", argv, log_path=log_path, netns=netns)
        self.group = group
        wait_for(self._healthy, 20, what="lokal serve /healthz")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def stop(self) -> int | None:
        self.group.stop(self.proc)
        return self.proc.returncode

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"lokal exited early:\n{self.log_path.read_text()[-3000:]}")
        try:
            return self.request("GET", "/healthz")[0] == 200
        except OSError:
            return False
