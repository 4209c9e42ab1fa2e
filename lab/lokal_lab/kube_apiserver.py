"""A real kube-apiserver (1.20.2, from scripts/kube_apiserver.sh) and a real etcd, run as a cluster runs them.

Rules:
- Loopback only: etcd and the apiserver listen on 127.0.0.1 ports picked free; the insecure port is off.
- The way a cluster runs it: TLS from a CA generated per instance (openssl), client certificates for the
  admin (`system:masters`), `--authorization-mode=Node,RBAC`, service-account signing keys. lokal gets a
  real ServiceAccount token from the apiserver's TokenRequest API, so it has only the RBAC it is bound to.
- etcd keeps its data on tmpfs (/dev/shm) when there is one: fsync there is cheap, so thousands of writes
  take seconds; the data survives an apiserver restart, not `stop()`.
- Processes are started through a `ProcessGroup` and stopped by PID. 1.20 does not exit on SIGTERM while
  a watch is open: stopping is SIGTERM, a short grace, then SIGKILL.
- Standard library only. The node hooks have the fake's names and meaning (`put_node`, `update_node`,
  `relabel`, `set_ready`, `set_address`, `delete_node`, `compact`, `cut_off`), so one test drives either.
- `cut_off()` cuts lokal off: its kubeconfig points at a loopback TCP relay (`CutoffRelay`) that resets
  every connection and refuses new ones until the block ends; the admin goes direct.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import functools
import http.client
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from lokal_lab.fake_apiserver import RequestRecord
from lokal_lab.processes import ProcessGroup
from lokal_lab.registry import free_port

Node = dict[str, Any]
VERSION = "1.20.2"
DEFAULT_BINARY = (
    Path(os.environ.get("LOKAL_CACHE", "/var/cache/lokal")) / f"kube-apiserver-{VERSION}/kube-apiserver"
)
BUILD_HINT = "run scripts/kube_apiserver.sh (builds it once, 4-7 minutes)"


def kube_apiserver_binary() -> Path | None:
    """The cached kube-apiserver ($LOKAL_KUBE_APISERVER overrides), or None when it was never built."""
    path = Path(os.environ.get("LOKAL_KUBE_APISERVER", str(DEFAULT_BINARY)))
    return path if path.is_file() and os.access(path, os.X_OK) else None


def missing_parts() -> str | None:
    """Why the real tier cannot run here, or None."""
    if kube_apiserver_binary() is None:
        return f"no kube-apiserver {VERSION} at {DEFAULT_BINARY}: {BUILD_HINT}"
    for tool in ("etcd", "openssl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed ({BUILD_HINT})"
    return None


class ApiRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


# ---------------------------------------------------------------------------------------------------------
# PKI (openssl)


@dataclass(frozen=True, slots=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    def data(self, name: str) -> str:
        return base64.b64encode(self.path(name).read_bytes()).decode()


def make_pki(directory: Path) -> Pki:
    """A CA, the apiserver's serving certificate (127.0.0.1), an admin client certificate and SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    def ec_key(name: str) -> None:
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name)

    ec_key("ca.key")
    openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=lokal-test-ca", "-days", "7", "-out", "ca.crt"
    )
    signed = [
        (
            "apiserver",
            "/CN=kube-apiserver",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc",
        ),
        ("admin", "/O=system:masters/CN=lokal-test-admin", "extendedKeyUsage=clientAuth"),
        ("etcd-client", "/CN=kube-apiserver-etcd-client", "extendedKeyUsage=clientAuth"),
    ]
    for name, subject, extension in signed:
        ec_key(f"{name}.key")
        openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "7", "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip
    openssl("genrsa", "-out", "sa.key", "2048")  # service-account tokens are RS256 in 1.20
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    return pki


# ---------------------------------------------------------------------------------------------------------
# A TCP relay that can cut lokal off


class CutoffRelay:
    """Loopback TCP relay to `target`; `blocked()` resets every connection and refuses new ones meanwhile."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._blocked = False
        self._sockets: set[socket.socket] = set()
        self._closing = False
        self._thread = threading.Thread(target=self._accept, name="cutoff-relay", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def blocked(self) -> Iterator[None]:
        with self._lock:
            self._blocked = True
            sockets = list(self._sockets)
        for sock in sockets:
            _reset(sock)
        try:
            yield
        finally:
            with self._lock:
                self._blocked = False

    def close(self) -> None:
        self._closing = True
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _reset(sock)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                blocked = self._blocked
            if blocked:
                _reset(client)
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _reset(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------------------------------
# The admin client


class AdminClient:
    """JSON over HTTPS with the admin's client certificate; one keep-alive connection per thread."""

    def __init__(self, port: int, pki: Pki, timeout: float = 30.0) -> None:
        self.port = port
        self._timeout = timeout
        context = ssl.create_default_context(cafile=str(pki.path("ca.crt")))
        context.load_cert_chain(str(pki.path("admin.crt")), str(pki.path("admin.key")))
        self._context = context
        self._local = threading.local()

    def request(
        self, method: str, path: str, body: object = None, *, content_type: str = "application/json"
    ) -> Any:
        """The decoded JSON answer of a 2xx; ApiRequestError otherwise."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):  # a keep-alive connection the server closed meanwhile is retried once
            connection = self._connection()
            try:
                connection.request(method, path, body=data, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                break
            except (OSError, http.client.HTTPException):
                self._local.connection = None
                connection.close()
                if attempt == 2:
                    raise
        if not 200 <= response.status <= 299:
            try:
                message = json.loads(payload).get("message", "")
            except ValueError:
                message = payload[:200].decode("utf-8", "replace")
            raise ApiRequestError(response.status, message)
        if not payload:
            return None
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(payload)
        return payload.decode("utf-8", "replace")  # /readyz and /healthz answer plain text

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _connection(self) -> http.client.HTTPSConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self._context, timeout=self._timeout
            )
            self._local.connection = connection
        return connection


# ---------------------------------------------------------------------------------------------------------
# The cluster


class KubeApiServer:
    """etcd + kube-apiserver on loopback: `with KubeApiServer(workdir, processes) as api: ...`."""

    def __init__(self, workdir: Path, processes: ProcessGroup, *, watch_cache: bool = True) -> None:
        binary = kube_apiserver_binary()
        if binary is None:
            raise RuntimeError(f"no kube-apiserver {VERSION}: {BUILD_HINT}")
        self.binary = binary
        self.workdir = workdir
        self._processes = processes
        self.watch_cache = watch_cache
        self.pki = make_pki(workdir / "pki")
        self.etcd_port, self._etcd_peer_port, self.port = free_port(), free_port(), free_port()
        shm = Path("/dev/shm")
        self._etcd_data = Path(tempfile.mkdtemp(prefix="lokal-etcd-", dir=shm if shm.is_dir() else None))
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self.admin = AdminClient(self.port, self.pki)
        self.relay: CutoffRelay | None = None
        self.audited_user = "system:serviceaccount:lokal-system:lokal"
        self.audit_log = workdir / "audit.log"
        self._audit_offset = 0

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> KubeApiServer:
        self._start_etcd()
        self.start_apiserver()
        self.relay = CutoffRelay(("127.0.0.1", self.port))
        return self

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        self.stop_apiserver()
        if self._etcd is not None:
            self._processes.stop(self._etcd, grace=5.0)
            self._etcd = None
        shutil.rmtree(self._etcd_data, ignore_errors=True)

    def __enter__(self) -> KubeApiServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start_apiserver(self, *, watch_cache: bool | None = None, timeout: float = 60.0) -> None:
        """Start the apiserver (again) and wait until /readyz is ok and RBAC lets lokal's role through."""
        if watch_cache is not None:
            self.watch_cache = watch_cache
        pki = self.pki.path
        argv = [
            str(self.binary),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            "--insecure-port=0",
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--client-ca-file={pki('ca.crt')}",
            f"--tls-cert-file={pki('apiserver.crt')}",
            f"--tls-private-key-file={pki('apiserver.key')}",
            "--authorization-mode=Node,RBAC",
            "--anonymous-auth=false",
            f"--service-account-key-file={pki('sa.pub')}",
            f"--service-account-signing-key-file={pki('sa.key')}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",  # no kubernetes Service endpoints pointing at loopback
            "--enable-priority-and-fairness=false",  # the bench floods it from one client on purpose
            f"--watch-cache={'true' if self.watch_cache else 'false'}",
            "--storage-media-type=application/json",  # etcd holds JSON: `seed_nodes` can write it directly
            "--max-requests-inflight=1600",
            "--max-mutating-requests-inflight=800",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            # The request log: every request of the watched user, as the apiserver received it.
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-mode=blocking",
            "--v=1",
        ]
        self._apiserver = self._processes.start(
            "kube-apiserver", argv, log_path=self.workdir / "kube-apiserver.log"
        )
        self._wait_ready(timeout)

    def stop_apiserver(self, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace`: 1.20 keeps running on SIGTERM while a watch is open."""
        if self._apiserver is not None:
            self._processes.stop(self._apiserver, grace=grace)
            self._apiserver = None
        self.admin.close()

    def restart_apiserver(self, *, watch_cache: bool | None = None) -> None:
        self.stop_apiserver()
        self.start_apiserver(watch_cache=watch_cache)

    def _start_etcd(self) -> None:
        argv = [
            "etcd",
            "--name=lokal-test",
            f"--data-dir={self._etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{self._etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self._etcd_peer_port}",
            f"--initial-cluster=lokal-test=http://127.0.0.1:{self._etcd_peer_port}",
            "--max-txn-ops=1024",  # seed_nodes writes nodes in large transactions
            "--log-level=warn",
            "--logger=zap",
        ]
        self._etcd = self._processes.start("etcd", argv, log_path=self.workdir / "etcd.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._etcd.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self._etcd.returncode}: see {self.workdir / 'etcd.log'}"
                )
            with contextlib.suppress(OSError, ValueError):
                if self._etcd_call("/health", None).get("health") == "true":
                    return
            time.sleep(0.05)
        raise TimeoutError("etcd did not become healthy in 30 s")

    def _wait_ready(self, timeout: float) -> None:
        assert self._apiserver is not None
        deadline = time.monotonic() + timeout
        log = self.workdir / "kube-apiserver.log"
        while time.monotonic() < deadline:
            if self._apiserver.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"kube-apiserver exited with {self._apiserver.returncode}:\n{tail}")
            try:
                self.admin.request("GET", "/readyz")
                # /readyz can be ok a moment before the RBAC cache is: wait until a role check answers.
                review = {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {"user": "probe", "groups": ["system:masters"],
                             "resourceAttributes": {"verb": "list", "resource": "nodes"}},
                }  # fmt: skip
                answer = self.admin.request(
                    "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
                )
                if answer.get("status", {}).get("allowed"):
                    return
            except (OSError, http.client.HTTPException, ApiRequestError, ValueError):
                pass
            self.admin.close()
            time.sleep(0.1)
        raise TimeoutError(f"kube-apiserver not ready in {timeout:.0f} s: see {log}")

    def _audit_policy(self) -> Path:
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["ResponseStarted", "ResponseComplete", "Panic"],
            "rules": [
                {
                    "level": "Metadata",
                    "users": [self.audited_user],
                    "resources": [{"group": "", "resources": ["nodes"]}],
                },
                {"level": "None"},
            ],
        }
        path = self.workdir / "audit-policy.json"
        path.write_text(json.dumps(policy))
        return path

    @property
    def requests(self) -> list[RequestRecord]:
        """The audited user's requests on nodes since `clear_requests`, in the fake's record type."""
        records = []
        with contextlib.suppress(FileNotFoundError), self.audit_log.open("rb") as log:
            log.seek(self._audit_offset)
            for line in log:
                entry = json.loads(line)
                url = urlsplit(entry["requestURI"])
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                records.append(RequestRecord("GET", url.path, query, 0.0))
        return records

    def clear_requests(self) -> None:
        self._audit_offset = self.audit_log.stat().st_size if self.audit_log.exists() else 0

    # -- identities -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def apply(self, obj: Mapping[str, Any]) -> Any:
        """Create `obj` (a core, rbac or apps object), or replace it when it exists."""
        path = collection_path(obj)
        try:
            return self.admin.request("POST", path, obj)
        except ApiRequestError as error:
            if error.status != 409:
                raise
        name = obj["metadata"]["name"]
        current = self.admin.request("GET", f"{path}/{quote(name)}")
        replacement = copy.deepcopy(dict(obj))
        replacement["metadata"] = {
            **replacement["metadata"],
            "resourceVersion": current["metadata"]["resourceVersion"],
        }
        return self.admin.request("PUT", f"{path}/{quote(name)}", replacement)

    def service_account_token(self, namespace: str, name: str, expiration_s: int = 3600) -> str:
        """A token for ServiceAccount namespace/name from the TokenRequest API (what a pod's volume gets)."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_s},
        }
        path = f"/api/v1/namespaces/{quote(namespace)}/serviceaccounts/{quote(name)}/token"
        return str(self.admin.request("POST", path, request)["status"]["token"])

    def write_kubeconfig(self, path: Path, *, token: str | None = None, direct: bool = False) -> Path:
        """A kubeconfig for lokal: through the cut-off relay (unless `direct`), with a bearer `token`,
        or with the admin's certificate when no token is given."""
        port = self.port if direct or self.relay is None else self.relay.port
        user: dict[str, str] = (
            {"token": token}
            if token is not None
            else {
                "client-certificate-data": self.pki.data("admin.crt"),
                "client-key-data": self.pki.data("admin.key"),
            }
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "real",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": self.pki.data("ca.crt"),
                    },
                }
            ],
            "users": [{"name": "real", "user": user}],
            "contexts": [{"name": "real", "context": {"cluster": "real", "user": "real"}}],
            "current-context": "real",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    # -- hooks: nodes (the fake's names) --------------------------------------------------------------

    def nodes(self) -> list[Node]:
        return list(self.admin.request("GET", "/api/v1/nodes")["items"])

    def node(self, name: str) -> Node:
        return dict(self.admin.request("GET", f"/api/v1/nodes/{quote(name)}"))

    @property
    def resource_version(self) -> int:
        return int(self.admin.request("GET", "/api/v1/nodes?limit=1")["metadata"]["resourceVersion"])

    def put_node(self, node: Node) -> int:
        """Create `node` with its status, or replace the node of that name. Returns the resourceVersion."""
        name = node["metadata"]["name"]
        body = _storable(node)
        try:
            created = self.admin.request("POST", "/api/v1/nodes", body)
            return int(created["metadata"]["resourceVersion"])
        except ApiRequestError as error:
            if error.status != 409:
                raise
        return self._replace(name, lambda current: body)

    def update_node(self, name: str, change: Callable[[Node], None]) -> int:
        """Apply `change` to node `name` (spec, metadata and status) and store it."""

        def changed(current: Node) -> Node:
            new = copy.deepcopy(current)
            change(new)
            return new

        return self._replace(name, changed)

    def relabel(self, name: str, labels: Mapping[str, str | None]) -> int:
        """Set labels on node `name`; a None value removes the label. One merge patch, like kubectl label."""
        patch = {"metadata": {"labels": dict(labels)}}
        answer = self.admin.request(
            "PATCH", f"/api/v1/nodes/{quote(name)}", patch, content_type="application/merge-patch+json"
        )
        return int(answer["metadata"]["resourceVersion"])

    def set_ready(self, name: str, ready: bool) -> int:
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        return self._patch_status(name, {"status": {"conditions": [condition]}})

    def set_address(self, name: str, address: str) -> int:
        return self._patch_status(
            name, {"status": {"addresses": [{"type": "InternalIP", "address": address}]}}
        )

    def delete_node(self, name: str) -> int:
        answer = self.admin.request("DELETE", f"/api/v1/nodes/{quote(name)}")
        return int(answer.get("metadata", {}).get("resourceVersion") or 0) if isinstance(answer, dict) else 0

    def seed_nodes(self, nodes: Iterable[Node], batch: int = 500) -> None:
        """Write nodes straight into etcd, as the apiserver stores them (JSON, see --storage-media-type):
        thousands in a second, where the API takes ~4 ms a node. The apiserver sees them through its etcd
        watch like any write; only admission and validation are skipped, so give it valid nodes."""
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        puts = []
        for node in nodes:
            stored = _storable(node)
            stored["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=created)
            key = f"/registry/minions/{stored['metadata']['name']}".encode()
            value = json.dumps(stored).encode()
            puts.append({"requestPut": {"key": _b64(key), "value": _b64(value)}})
        for start in range(0, len(puts), batch):
            self._etcd_call("/v3/kv/txn", {"success": puts[start : start + batch]})

    def wipe_nodes(self, name_prefix: str = "") -> None:
        """Delete every node (whose name starts with `name_prefix`) straight from etcd in one request; the
        apiserver's watch sees the deletes."""
        key = f"/registry/minions/{name_prefix}".encode()
        end = key[:-1] + bytes([key[-1] + 1])  # the first key after every key with this prefix
        self._etcd_call("/v3/kv/deleterange", {"key": _b64(key), "range_end": _b64(end)})

    def delete_nodes(self, label_selector: str) -> None:
        """Delete every node `label_selector` matches, in one request (deletecollection)."""
        self.admin.request("DELETE", f"/api/v1/nodes?labelSelector={quote(label_selector)}")

    def sync_nodes(self, nodes: Iterable[Node], workers: int = 8) -> None:
        """Make the node set exactly `nodes` (each stored as given); `workers` threads share the writes."""
        wanted = {n["metadata"]["name"]: n for n in nodes}
        existing = {n["metadata"]["name"] for n in self.nodes()}
        jobs: list[Callable[[], object]] = [
            functools.partial(self.delete_node, name) for name in existing - set(wanted)
        ]
        jobs += [functools.partial(self.put_node, node) for node in wanted.values()]
        run_parallel(jobs, workers)

    def compact(self) -> int:
        """Compact etcd to its current revision (physically): watches from older versions get 410."""
        revision = int(self._etcd_call("/v3/kv/range", {"key": _b64(b"/")})["header"]["revision"])
        self._etcd_call("/v3/kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        """lokal's connections are reset and new ones refused until the block ends (the admin goes direct)."""
        assert self.relay is not None, "start() first"
        with self.relay.blocked():
            yield

    # -- internals ------------------------------------------------------------------------------------

    def _replace(self, name: str, make: Callable[[Node], Node]) -> int:
        for _ in range(10):  # optimistic concurrency: retry on 409 Conflict
            current = self.node(name)
            new = _storable(make(current))
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                stored = self.admin.request("PUT", f"/api/v1/nodes/{quote(name)}", new)
                new["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
                if new.get("status") != stored.get("status"):
                    stored = self.admin.request("PUT", f"/api/v1/nodes/{quote(name)}/status", new)
                return int(stored["metadata"]["resourceVersion"])
            except ApiRequestError as error:
                if error.status != 409:
                    raise
        raise RuntimeError(f"node {name}: too many conflicts")

    def _patch_status(self, name: str, patch: Mapping[str, Any]) -> int:
        answer = self.admin.request(
            "PATCH",
            f"/api/v1/nodes/{quote(name)}/status",
            patch,
            content_type="application/strategic-merge-patch+json",
        )
        return int(answer["metadata"]["resourceVersion"])

    def _etcd_call(self, path: str, body: object) -> Any:
        connection = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=30)
        try:
            if body is None:
                connection.request("GET", path)
            else:
                connection.request(
                    "POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"}
                )
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise ApiRequestError(response.status, payload[:200].decode("utf-8", "replace"))
        return json.loads(payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def collection_path(obj: Mapping[str, Any]) -> str:
    """The REST collection of a (namespaced or cluster-scoped) object of the kinds the tests apply."""
    api_version = str(obj["apiVersion"])
    plural = _PLURALS[str(obj["kind"])]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    namespace = obj.get("metadata", {}).get("namespace")
    return f"{base}/namespaces/{quote(namespace)}/{plural}" if namespace else f"{base}/{plural}"


_PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "DaemonSet": "daemonsets",
    "Node": "nodes",
}


def _storable(node: Node) -> Node:
    """`node` without the server-owned metadata a create or replace must not carry."""
    stored = copy.deepcopy(node)
    metadata = stored.setdefault("metadata", {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "selfLink"):
        metadata.pop(key, None)
    stored.setdefault("kind", "Node")
    stored.setdefault("apiVersion", "v1")
    return stored


def run_parallel(jobs: list[Callable[[], object]], workers: int) -> None:
    """Run `jobs` on `workers` threads; the first exception is raised once all threads are done."""
    queue = list(reversed(jobs))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                job = queue.pop()
            try:
                job()
            except BaseException as error:
                with lock:
                    errors.append(error)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(max(1, min(workers, len(jobs))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
