"""The optional shared secret every peer request carries (`--peer-token-file`, mounted from a Secret).

Rules:
- The file holds one or more tokens, one per line (blank lines and `#` comments ignored). Any of them is
  accepted, so a rotation is: add the new token, roll, remove the old one. Peers send the first.
- Comparison is constant-time against every token, with no early exit.
- The file is re-read when it changes (kubelet updates mounted Secrets in place), at most every
  `recheck_s` seconds. A file that becomes unreadable or empty keeps the last good tokens, loudly.
- Tokens are never logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sidecar.logs import get_logger, log_event

TOKEN_HEADER = "x-lokal-token"
MIN_TOKEN_LENGTH = 16
log = get_logger("security")


class TokenFileError(ValueError):
    """The token file cannot be used; the message names --peer-token-file."""


def parse_tokens(text: str) -> tuple[str, ...]:
    tokens = tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")
    )
    if not tokens:
        raise TokenFileError("--peer-token-file: the file holds no token")
    short = [t for t in tokens if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise TokenFileError(f"--peer-token-file: tokens must be at least {MIN_TOKEN_LENGTH} characters")
    return tokens


class PeerTokens:
    def __init__(self, path: str, recheck_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.path = Path(path)
        self.recheck_s = recheck_s
        self.clock = clock
        self._tokens = self._read()  # raises TokenFileError at startup: a bad file is a config error
        self._stamp = self._file_stamp()
        self._checked_at = clock()

    @property
    def header(self) -> tuple[str, str]:
        """What this node sends on its own peer requests."""
        self._maybe_reload()
        return (TOKEN_HEADER, self._tokens[0])

    def accepts(self, presented: str | None) -> bool:
        self._maybe_reload()
        if not presented:
            return False
        candidate = presented.encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token.encode())
        return matched

    def _read(self) -> tuple[str, ...]:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise TokenFileError(f"--peer-token-file {str(self.path)!r}: {exc.strerror}") from None
        return parse_tokens(text)

    def _file_stamp(self) -> tuple[float, int]:
        try:
            stat = os.stat(self.path)
        except OSError:
            return (0.0, 0)
        return (stat.st_mtime, stat.st_ino)

    def _maybe_reload(self) -> None:
        now = self.clock()
        if now - self._checked_at < self.recheck_s:
            return
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._tokens = self._read()
        except TokenFileError as exc:
            log_event(log, "peer_tokens_unreadable", logging.ERROR, error=str(exc),
                      keeping="last good tokens")
            return
        log_event(log, "peer_tokens_reloaded", count=len(self._tokens))
