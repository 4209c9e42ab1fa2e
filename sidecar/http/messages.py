"""The request and response types a handler sees, and the pure helpers around them.

Rules:
- No I/O here: these are plain data objects. The server builds a `Request` from h11's event and turns a
  `Response` into bytes on the wire; a handler only reads one and returns the other.
- Header names are lowercase `str`; header values are `str` (decoded as latin-1, as HTTP/1.1 says).
- `Request.path` is the raw path (still percent-encoded). Decoding is the caller's choice
  (`decoded_path`): a registry must validate the raw text before it means anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote


@dataclass(slots=True)
class Request:
    """One HTTP request, with its body already read (request bodies are small and bounded)."""

    method: str
    target: str
    path: str
    query_string: str
    headers: list[tuple[str, str]]
    http_version: str
    client: tuple[str, int]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def query(self) -> dict[str, list[str]]:
        """The parsed query string: every name with all its values, blanks kept."""
        return parse_query(self.query_string)

    def decoded_path(self) -> str:
        """The path with percent-escapes decoded (validate `path` first when it names a file)."""
        return unquote(self.path, errors="strict")


@dataclass(frozen=True, slots=True)
class FileBody:
    """`length` bytes of the open file `fd` from `offset`, sent with os.sendfile.

    The server calls `close` exactly once when it is done with the body (sent, failed or a HEAD).
    """

    fd: int
    offset: int
    length: int
    close: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class StreamBody:
    """A body produced chunk by chunk (a relay, the gRPC fallback), sent with backpressure.

    `length` None means unknown: chunked for HTTP/1.1 clients, close-delimited for HTTP/1.0.
    The server awaits `aclose` exactly once when it is done with the body (sent, failed or a HEAD).
    """

    chunks: AsyncIterator[bytes]
    length: int | None = None
    aclose: Callable[[], Awaitable[None]] | None = None


Body = bytes | FileBody | StreamBody


@dataclass(slots=True)
class Response:
    """What a handler returns. The server sets Content-Length from the body (see `framing_length`).

    For a FileBody or StreamBody the server fills in `sent` and `body_failed` before it releases the
    body, so a release hook can report what really happened: `sent` is the body bytes the client
    received (all of them when the body completed; when it broke off, what the client's TCP
    acknowledged, never the bytes merely promised), and `body_failed` says the body itself failed (a
    stream raised, a file ended short), as opposed to the client going away.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Body = b""
    sent: int | None = None
    body_failed: bool = False


Handler = Callable[[Request], Awaitable[Response]]


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into (raw path, raw query string).

    The absolute form (`http://host/path?q`, sent to proxies) is reduced to its path.
    """
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        query_mark = rest.find("?")
        if slash < 0 or (0 <= query_mark < slash):
            target = "/" + (rest[query_mark:] if query_mark >= 0 else "")
        else:
            target = rest[slash:]
    path, _, query = target.partition("?")
    return path, query


def parse_query(query_string: str) -> dict[str, list[str]]:
    """`a=1&a=2&b=` -> {"a": ["1", "2"], "b": [""]}; bad escapes are kept as text, never an error."""
    if not query_string:
        return {}
    return parse_qs(query_string, keep_blank_values=True, errors="replace")
