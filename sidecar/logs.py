"""One logger setup for lokal: JSON lines on stdout for `kubectl logs`, or text for humans.

Rules:
- Every line is one event with a short name (`event`) and flat fields; no free-form prose in fields.
- Callers use `log_event`, never string formatting, so that every field stays machine-readable.
- Nothing secret is ever passed in: no tokens, no Authorization headers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import time
from typing import Any

_FIELDS = "lokal_fields"


def get_logger(part: str) -> logging.Logger:
    """The logger of one part of lokal, e.g. `get_logger("registry")`."""
    return logging.getLogger(f"lokal.{part}")


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _FIELDS, {})
        # A null field says nothing to a person reading: left out here (the JSON lines keep every field).
        pairs = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items() if value is not None)
        text = f"{_timestamp(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if pairs:
            text += " " + pairs
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(log_format: str = "json", level: str = "INFO") -> None:
    """Install the single stdout handler on the `lokal` logger tree."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger("lokal")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _timestamp(created: float) -> str:
    """RFC 3339 UTC with milliseconds; the formatted second is reused (a log line per request)."""
    return f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z"


_BARE = re.compile(r"[A-Za-z0-9_.:/@+,\-]+")


def _text_value(value: Any) -> str:
    """A value as `key=value` shows it: bare when unambiguous, else JSON-quoted (quotes, `=`, spaces and
    backslashes escaped), so that every line splits back into its fields. Lists and maps are compact JSON."""
    if isinstance(value, str):
        return value if _BARE.fullmatch(value) else json.dumps(value)
    text = json.dumps(value, default=str, separators=(",", ":"))
    return json.dumps(text) if any(c.isspace() for c in text) else text
