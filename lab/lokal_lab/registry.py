"""A real upstream registry (CNCF distribution 2.8, Debian's docker-registry) with its access log."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from lokal_lab.processes import ProcessGroup, wait_for


@dataclass
class RegistryInstance:
    directory: Path
    host: str = "127.0.0.1"
    port: int = 0
    netns: str | None = None
    _group: ProcessGroup | None = field(default=None, repr=False)
    _proc: object = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "registry.log"

    def start(self, group: ProcessGroup, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host) if self.netns is None else 5000
        config = self.directory / "config.yml"
        config.write_text(
            f"""version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {self.directory / 'data'}
  delete:
    enabled: true
http:
  addr: {self.address}
"""
        )
        self._group = group
        self._proc = group.start(
            "docker-registry",
            ["docker-registry", "serve", str(config)],
            log_path=self.log_path,
            netns=self.netns,
        )
        if self.netns is None:
            wait_for(self._answers, timeout, what=f"docker-registry on {self.address}")

    def stop(self) -> None:
        if self._group is not None and self._proc is not None:
            self._group.stop(self._proc)  # type: ignore[arg-type]
            self._proc = None

    def _answers(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            try:
                probe.connect((self.host, self.port))
            except OSError:
                return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port
