"""The seam between the reflector and the Kubernetes API: three Node calls over the official client.

Rules:
- The official `kubernetes` client is imported here only, and lazily (it costs ~0.3 s and ~43 MB), so the
  rest of lokal can use the membership model without it.
- Bodies are read as raw JSON dicts (`_preload_content=False`): the node parser, not the client's model
  validation, decides what a malformed Node means.
- Every call has `_request_timeout=(connect, read)`; a watch's read timeout is its server timeout plus the
  normal read timeout, so a half-open connection cannot hang the thread.
- Errors leave this module as `ApiError` (an HTTP status from the server; 0 when no usable answer came) or
  `ApiUnavailable` (no connection); the reflector never sees client or urllib3 types.
- `abort()` may be called from another thread: it cuts the response being read, so stopping is prompt.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from sidecar.cluster.config import ClusterConfigError, WatchTimings

JsonDict = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}" if status else reason)
        self.status = status
        self.reason = reason


class ApiUnavailable(Exception):
    """No answer: connection refused, reset, timed out."""


class NodeApi(Protocol):
    def read_node(self, name: str) -> JsonDict: ...

    def list_nodes(self, label_selector: str | None) -> tuple[list[JsonDict], str]:
        """The nodes and the list's resourceVersion."""
        ...

    def watch_nodes(
        self, label_selector: str | None, resource_version: str, timeout_seconds: int
    ) -> Iterator[JsonDict]:
        """The raw watch events ({"type": ..., "object": {...}}) until the server ends the watch."""
        ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


class KubernetesNodeApi:
    """`NodeApi` over the official client, configured from a kubeconfig file or in-cluster."""

    def __init__(self, kubeconfig: Path | None, timings: WatchTimings) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if kubeconfig is not None:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
                )
            else:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError, ValueError, TypeError) as error:
            where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config (no --kubeconfig)"
            raise ClusterConfigError(f"{where}: {error}") from error
        # No urllib3 retries: a hanging request would be retried silently (4 x the read timeout); the
        # reflector owns retrying, with backoff and a log line per failure.
        configuration.retries = False
        self._client = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._client)
        self._timings = timings
        self._lock = threading.Lock()
        self._response: Any = None  # the urllib3 response being read, for abort()
        self._aborted = False

    def read_node(self, name: str) -> JsonDict:
        body = self._call(
            lambda timeout: self._core.read_node(name, _preload_content=False, _request_timeout=timeout)
        )
        return body

    def list_nodes(self, label_selector: str | None) -> tuple[list[JsonDict], str]:
        body = self._call(
            lambda timeout: self._core.list_node(
                label_selector=label_selector, _preload_content=False, _request_timeout=timeout
            )
        )
        items = body.get("items")
        metadata = body.get("metadata")
        rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if not isinstance(items, list) or not isinstance(rv, str):
            raise ApiError(0, "node list without items or metadata.resourceVersion")
        return items, rv

    def watch_nodes(
        self, label_selector: str | None, resource_version: str, timeout_seconds: int
    ) -> Iterator[JsonDict]:
        from kubernetes.watch.watch import iter_resp_lines

        timeout = (self._timings.connect_timeout_s, timeout_seconds + self._timings.read_timeout_s)
        response = self._open(
            lambda: self._core.list_node(
                watch=True,
                label_selector=label_selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _preload_content=False,
                _request_timeout=timeout,
            )
        )
        try:
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError as error:
                    raise ApiError(0, f"watch sent a line that is not JSON: {line[:80]!r}") from error
                if isinstance(event, dict):
                    yield event
        except (ApiError, GeneratorExit):
            raise
        except Exception as error:
            raise self._translate(error) from error
        finally:
            self._release(response)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            response = self._response
        connection = getattr(response, "connection", None)
        sock = getattr(connection, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.abort()
        self._client.close()  # type: ignore[no-untyped-call]

    # -- internals ------------------------------------------------------------------------------------

    def _call(self, request: Any) -> JsonDict:
        timeout = (self._timings.connect_timeout_s, self._timings.read_timeout_s)
        response = self._open(lambda: request(timeout))
        try:
            data = response.data
        except Exception as error:
            raise self._translate(error) from error
        finally:
            self._release(response)
        try:
            body = json.loads(data)
        except ValueError as error:
            raise ApiError(0, "the API answered with a body that is not JSON") from error
        if not isinstance(body, dict):
            raise ApiError(0, "the API answered with JSON that is not an object")
        return body

    def _open(self, request: Any) -> Any:
        if self._aborted:
            raise ApiUnavailable("stopped")
        try:
            response = request()
        except Exception as error:
            raise self._translate(error) from error
        with self._lock:
            self._response = response
        return response

    def _release(self, response: Any) -> None:
        with self._lock:
            if self._response is response:
                self._response = None
        try:
            response.close()
            response.release_conn()
        except Exception:  # a broken connection is dropped by the pool anyway
            pass

    @staticmethod
    def _translate(error: Exception) -> Exception:
        from kubernetes.client.exceptions import ApiException

        if isinstance(error, ApiException):
            status = int(error.status or 0)
            reason = _status_message(error.body) or str(error.reason or "")
            return ApiError(status, reason) if status else ApiUnavailable(reason)
        return ApiUnavailable(f"{type(error).__name__}: {error}")


def _status_message(body: object) -> str:
    """The `message` of a Status body, when the error carried one."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str):
        return ""
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200]
    return str(status.get("message", "")) if isinstance(status, dict) else ""
