"""lokal's HTTP/1.1 layer: an h11 server core that serves files zero-copy, and the peer client.

The handler interface (what `sidecar.registry` implements):

    async def handler(request: Request) -> Response: ...

    server = HttpServer(handler, ServerLimits())
    await server.serve(("0.0.0.0", 5050), task_status=...)   # started with the bound (host, port)
    await server.shutdown()                                  # stop accepting, drain (bounded), close

- `Request`: `method`, `target` (raw), `path` (raw, still percent-encoded; `decoded_path()` decodes),
  `query_string` and `query` (dict[str, list[str]]), `headers` (list of (lowercase name, value);
  `header(name)` gets the first), `http_version` ("1.1"), `client` ((host, port)), `body` (bytes: the
  whole request body, at most `ServerLimits.max_request_body`).
- `Response(status, headers, body)`, `body` one of:
  - `bytes`;
  - `FileBody(fd, offset, length, close)`: sent with os.sendfile; `close()` is called once when done;
  - `StreamBody(chunks, length, aclose)`: an async iterator of bytes sent with backpressure; `length`
    None means chunked (HTTP/1.1) or close-delimited (HTTP/1.0); `aclose()` is awaited once when done.
- Framing belongs to the server: Content-Length comes from the body. On HEAD no body byte is sent, the
  handler's Content-Length header is kept (or the body's length is used), and the body is released.
- If a body fails half-way (the stream raises, sendfile fails, the file is short, the stream is longer or
  shorter than its `length`), the connection is closed: the client sees a truncated body.
- A handler exception becomes a 500 (logged as `http_handler_error`); malformed requests get 400, heads
  over the limit 431, bodies over the limit 413, and the connection closes. Full server: 503 and close.

`PeerClient` (in `sidecar.http.client`) is the one HTTP client lokal uses to talk to its peers. It too owns
its sockets (`sidecar.http.peer_connection`): a relayed body is read with one `recv` per chunk.
"""

from sidecar.http.limits import ServerLimits
from sidecar.http.messages import Body, FileBody, Handler, Request, Response, StreamBody
from sidecar.http.server import HttpServer, open_listener

__all__ = [
    "Body",
    "FileBody",
    "Handler",
    "HttpServer",
    "Request",
    "Response",
    "ServerLimits",
    "StreamBody",
    "open_listener",
]
