"""The seam between the reflector and the Kubernetes API: three Node calls over the official client.

Rules:
- The official `kubernetes` client is imported here only, and lazily, so the rest of lokal can use the
  membership model without it. Only the parts lokal uses are loaded (memory, issue 8):
  - `ApiClient` + `Configuration` (configuration loading, auth, TLS, the urllib3 pool), not the generated
    `CoreV1Api` (pydantic-validated methods for ~400 endpoints, ~21 MB): the three requests are built with
    `ApiClient.param_serialize` and sent with `ApiClient.call_api`, exactly as the generated `list_node`
    and `read_node` build and send them;
  - the `kubernetes`, `kubernetes.config` and `kubernetes.utils` package `__init__`s are deferred
    (`_defer_package_init`): they import every optional part (dynamic client with jsonschema, websockets,
    informer; kubeconfig support with oauthlib, requests and yaml even in-cluster). Their submodules load
    as usual, and the first access to a name an `__init__` would have defined runs it, so any other user
    of the package still sees it whole.
- Bodies are read as raw JSON dicts: the node parser, not the client's model validation, decides what a
  malformed Node means.
- Every call has `_request_timeout=(connect, read)`; a watch's read timeout is its server timeout plus the
  normal read timeout, so a half-open connection cannot hang the thread.
- `call_api` returns non-2xx answers instead of raising (the generated methods check the status
  themselves): like them, a non-2xx answer's body is read, then it is an `ApiError`.
- Errors leave this module as `ApiError` (an HTTP status from the server; 0 when no usable answer came) or
  `ApiUnavailable` (no connection); the reflector never sees client or urllib3 types.
- `abort()` may be called from another thread: it cuts the response being read, so stopping is prompt.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sidecar.cluster.config import ClusterConfigError, WatchTimings

if TYPE_CHECKING:
    from urllib3 import BaseHTTPResponse

JsonDict = dict[str, Any]
Query = list[tuple[str, object]]

# The paths and parameters of core_v1_api's read_node and list_node (kubernetes 37).
_NODE_PATH = "/api/v1/nodes/{name}"
_NODES_PATH = "/api/v1/nodes"
_HEADERS = {"Accept": "application/json"}  # what the generated methods pick from their Accept list
_AUTH = ["BearerToken"]
# Packages whose `__init__` imports far more than lokal uses: everything optional (kubernetes), kubeconfig
# support with oauthlib, requests and yaml even in-cluster (kubernetes.config), create_from_yaml with yaml
# (kubernetes.utils, of which rest.py needs only `retry` and `keepalive`).
_DEFERRED_PACKAGES = ("kubernetes", "kubernetes.config", "kubernetes.utils")


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
        for package in _DEFERRED_PACKAGES:
            _defer_package_init(package)
        from kubernetes.client.api_client import ApiClient
        from kubernetes.client.configuration import Configuration
        from kubernetes.config.config_exception import ConfigException

        configuration = Configuration()
        if kubeconfig is not None and not kubeconfig.is_file():
            # The client would call a missing file "Invalid kube-config file", which sends people looking
            # for a syntax error.
            problem = "is not a file" if kubeconfig.exists() else "does not exist"
            raise ClusterConfigError(f"--kubeconfig {kubeconfig}: {problem}")
        try:
            if kubeconfig is not None:
                from kubernetes.config.kube_config import load_kube_config

                load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
                )
            else:
                from kubernetes.config.incluster_config import load_incluster_config

                load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError, ValueError, TypeError) as error:
            where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config (no --kubeconfig)"
            raise ClusterConfigError(f"{where}: {error}") from error
        # No urllib3 retries: a hanging request would be retried silently (4 x the read timeout); the
        # reflector owns retrying, with backoff and a log line per failure.
        configuration.retries = False
        self._client = ApiClient(configuration)
        self._timings = timings
        self._lock = threading.Lock()
        self._response: BaseHTTPResponse | None = None  # the response being read, for abort()
        self._aborted = False

    def read_node(self, name: str) -> JsonDict:
        return self._get_json(_NODE_PATH, {"name": name}, [])

    def list_nodes(self, label_selector: str | None) -> tuple[list[JsonDict], str]:
        query: Query = [] if label_selector is None else [("labelSelector", label_selector)]
        body = self._get_json(_NODES_PATH, None, query)
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

        # list_node's query order; booleans go out as "true", like the generated code sends them.
        query: Query = [("allowWatchBookmarks", True)]
        if label_selector is not None:
            query.append(("labelSelector", label_selector))
        query += [("resourceVersion", resource_version), ("timeoutSeconds", timeout_seconds), ("watch", True)]
        timeout = (self._timings.connect_timeout_s, timeout_seconds + self._timings.read_timeout_s)
        response = self._open(_NODES_PATH, None, query, timeout)
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
            raise _translate(error) from error
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

    def _get_json(self, path: str, path_params: dict[str, str] | None, query: Query) -> JsonDict:
        timeout = (self._timings.connect_timeout_s, self._timings.read_timeout_s)
        data = self._read_all(self._open(path, path_params, query, timeout))
        try:
            body = json.loads(data)
        except ValueError as error:
            raise ApiError(0, "the API answered with a body that is not JSON") from error
        if not isinstance(body, dict):
            raise ApiError(0, "the API answered with JSON that is not an object")
        return body

    def _open(
        self, path: str, path_params: dict[str, str] | None, query: Query, timeout: tuple[float, float]
    ) -> BaseHTTPResponse:
        """Send a GET; the urllib3 response of a 2xx answer, its body not read yet."""
        if self._aborted:
            raise ApiUnavailable("stopped")
        try:
            # Auth (a token, refreshed by the kubeconfig's hook if it has one) is applied here, per request.
            request = self._client.param_serialize(
                method="GET",
                resource_path=path,
                path_params=path_params,
                query_params=query,
                header_params=dict(_HEADERS),  # param_serialize adds to it
                auth_settings=_AUTH,
            )
            response: BaseHTTPResponse = self._client.call_api(*request, _request_timeout=timeout).response
        except Exception as error:
            raise _translate(error) from error
        with self._lock:
            self._response = response
        if 200 <= response.status <= 299:
            return response
        raise _status_error(response.status, response.reason, self._read_all(response))

    def _read_all(self, response: BaseHTTPResponse) -> bytes:
        """The whole body; the response is released either way."""
        try:
            return response.data
        except Exception as error:
            raise _translate(error) from error
        finally:
            self._release(response)

    def _release(self, response: BaseHTTPResponse) -> None:
        with self._lock:
            if self._response is response:
                self._response = None
        try:
            response.close()
            response.release_conn()
        except Exception:  # a broken connection is dropped by the pool anyway
            pass


def _translate(error: Exception) -> Exception:
    """A client or urllib3 exception as ApiError / ApiUnavailable."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(error, ApiException):  # rest.py raises it with status 0 for TLS errors
        status = int(error.status or 0)
        reason = _status_message(error.body) or str(error.reason or "")
        return ApiError(status, reason) if status else ApiUnavailable(reason)
    return ApiUnavailable(f"{type(error).__name__}: {error}")


def _status_error(status: int, reason: str | None, data: bytes) -> Exception:
    """A non-2xx answer as the generated code's ApiException would have been translated: the Status
    body's message, else the HTTP reason phrase."""
    try:
        body: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        body = None
    message = _status_message(body) or str(reason or "")
    return ApiError(status, message) if status else ApiUnavailable(message)


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


# Held while a deferred package's `__init__` runs, so another thread waits for the whole package.
_import_lock = threading.RLock()


def _defer_package_init(name: str) -> None:
    """Register package `name` without running its `__init__` yet (no-op if it is already imported).

    Its submodules import as usual (the import system needs only the package's `__path__`). The first
    access to a name the module does not have runs the real `__init__` in it, once, so code that expects
    the whole package (`kubernetes.config.load_kube_config`, `kubernetes.__version__`) still works."""
    with _import_lock:
        if name in sys.modules:
            return
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return  # not an importable package: the normal import reports it
        module = importlib.util.module_from_spec(spec)
        loader = spec.loader
        ran = threading.Event()

        def complete(attribute: str) -> object:
            with _import_lock:
                if not ran.is_set():
                    ran.set()  # a lookup from inside the `__init__` (`from . import x`) is a plain miss
                    try:
                        loader.exec_module(module)
                    finally:
                        del module.__dict__["__getattr__"]
            try:
                return module.__dict__[attribute]
            except KeyError:
                raise AttributeError(f"module {name!r} has no attribute {attribute!r}") from None

        module.__dict__["__getattr__"] = complete
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, module)
