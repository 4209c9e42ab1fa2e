"""KubernetesNodeApi: the three Node requests over ApiClient, without the generated CoreV1Api.

The requests must be the ones the generated `read_node` / `list_node` send (same URL, headers, timeouts),
answers must map to ApiError / ApiUnavailable exactly as before, and a fresh process must load only the
parts of the client lokal uses, while the package stays whole for any code that asks for more.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from lokal_lab.fake_apiserver import FakeApiServer, write_kubeconfig

from sidecar.cluster.kube_api import ApiError, ApiUnavailable, KubernetesNodeApi, _status_error

from .conftest import FAST

REGION = "topology.kubernetes.io/region"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def node_api(kubeconfig: Path) -> Iterator[KubernetesNodeApi]:
    api = KubernetesNodeApi(kubeconfig, FAST)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What reaches urllib3: method, URL, headers, timeout, preload_content (the request still goes out)."""
    calls: list[tuple[Any, ...]] = []
    request = urllib3.PoolManager.request

    def spy(self: urllib3.PoolManager, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = sorted((kwargs.get("headers") or {}).items())
        calls.append((method, url, headers, repr(kwargs.get("timeout")), kwargs.get("preload_content")))
        return request(self, method, url, *args, **kwargs)

    monkeypatch.setattr(urllib3.PoolManager, "request", spy)
    return calls


def test_the_three_requests_are_exactly_what_the_generated_core_v1_api_sends(
    fake_api: FakeApiServer, node_api: KubernetesNodeApi, sent: list[tuple[Any, ...]]
) -> None:
    from kubernetes.client import CoreV1Api

    selector = f"{REGION} in (r1, r2)"
    node_api.read_node("a1")
    _, rv = node_api.list_nodes(selector)
    list(node_api.watch_nodes(selector, rv, 1))
    ours = list(sent)
    sent.clear()

    core = CoreV1Api(node_api._client)
    short = (FAST.connect_timeout_s, FAST.read_timeout_s)
    watch = (FAST.connect_timeout_s, 1 + FAST.read_timeout_s)
    responses: list[Any] = [
        core.read_node("a1", _preload_content=False, _request_timeout=short),
        core.list_node(label_selector=selector, _preload_content=False, _request_timeout=short),
        core.list_node(
            watch=True,
            label_selector=selector,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
            _preload_content=False,
            _request_timeout=watch,
        ),
    ]
    for response in responses:
        response.data  # noqa: B018 (read it all, as ours did)
        response.release_conn()

    assert len(ours) == 3
    assert ours == sent  # method, URL with query, every header, timeouts, streaming
    assert ("authorization", "Bearer test-token") in ours[0][2]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422, 429, 500, 503])
def test_an_error_status_on_a_list_is_an_api_error_with_the_status_and_the_servers_message(
    fake_api: FakeApiServer, node_api: KubernetesNodeApi, status: int
) -> None:
    fake_api.fail_next(status, kind="list", reason="told to fail")
    with pytest.raises(ApiError) as raised:
        node_api.list_nodes(None)
    assert (raised.value.status, raised.value.reason) == (status, "told to fail")
    assert len(node_api.list_nodes(None)[0]) == 5  # the connection pool is still usable


def test_a_410_status_on_a_watch_is_raised_before_any_event(
    fake_api: FakeApiServer, node_api: KubernetesNodeApi
) -> None:
    _, rv = node_api.list_nodes(None)
    fake_api.fail_next(410, kind="watch", reason="too old resource version")
    with pytest.raises(ApiError) as raised:
        next(node_api.watch_nodes(None, rv, 1))
    assert (raised.value.status, raised.value.reason) == (410, "too old resource version")


def test_an_expired_version_as_an_error_event_is_passed_on_as_an_event(
    fake_api: FakeApiServer, node_api: KubernetesNodeApi
) -> None:
    _, rv = node_api.list_nodes(None)
    fake_api.delete_node("b2")
    fake_api.delete_node("b1")  # two changes: etcd keeps the one it compacts to
    fake_api.compact()
    events = list(node_api.watch_nodes(None, rv, 1))
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410


def test_a_missing_node_is_a_404_with_the_apiservers_message(node_api: KubernetesNodeApi) -> None:
    with pytest.raises(ApiError) as raised:
        node_api.read_node("nope")
    assert (raised.value.status, raised.value.reason) == (404, 'nodes "nope" not found')


def test_a_wrong_token_is_a_401(fake_api: FakeApiServer, tmp_path: Path) -> None:
    api = KubernetesNodeApi(write_kubeconfig(tmp_path / "kc", fake_api.url, token="wrong"), FAST)
    try:
        with pytest.raises(ApiError) as raised:
            api.list_nodes(None)
        assert raised.value.status == 401
    finally:
        api.close()


def test_no_answer_is_api_unavailable(fake_api: FakeApiServer, node_api: KubernetesNodeApi) -> None:
    with fake_api.outage("reset"), pytest.raises(ApiUnavailable):
        node_api.list_nodes(None)
    with fake_api.outage("hang"), pytest.raises(ApiUnavailable):
        node_api.read_node("a1")  # the read timeout (FAST: 1 s) ends it


def test_a_closed_port_is_api_unavailable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    api = KubernetesNodeApi(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}"), FAST)
    try:
        with pytest.raises(ApiUnavailable):
            list(api.watch_nodes(None, "1", 1))
    finally:
        api.close()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"kind": "Status", "message": "the message"}', "the message"),
        (b"plain text", "plain text"),
        (b"\xff\xfe not utf-8", "Reason Phrase"),  # the client kept no body: the reason phrase
        (b"", "Reason Phrase"),
    ],
)
def test_an_error_answer_is_described_by_its_status_message_or_else_its_reason(
    body: bytes, expected: str
) -> None:
    error = _status_error(418, "Reason Phrase", body)
    assert isinstance(error, ApiError)
    assert (error.status, error.reason) == (418, expected)


# -- what a fresh lokal process imports -------------------------------------------------------------------

_PROBE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from sidecar.cluster import WatchTimings
    from sidecar.cluster.kube_api import KubernetesNodeApi

    api = KubernetesNodeApi(Path(sys.argv[1]), WatchTimings(connect_timeout_s=5, read_timeout_s=5))
    items, rv = api.list_nodes(None)
    events = list(api.watch_nodes(None, rv, 1))
    api.close()
    report = {"nodes": len(items), "modules": sorted(sys.modules)}
    if sys.argv[2] == "whole":
        import kubernetes
        from kubernetes import config, dynamic, utils, watch
        report["whole"] = [
            kubernetes.__version__,
            callable(config.load_kube_config),
            callable(config.load_incluster_config),
            callable(utils.create_from_yaml),
            callable(watch.Watch),
            callable(dynamic.DynamicClient),
            callable(kubernetes.client.CoreV1Api),
        ]
    print(json.dumps(report))
    """
)


def _probe(kubeconfig: Path, mode: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(kubeconfig), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_fresh_process_loads_neither_core_v1_api_nor_the_clients_optional_parts(kubeconfig: Path) -> None:
    report = _probe(kubeconfig, "lean")
    assert report["nodes"] == 5
    loaded = set(report["modules"])
    for heavy in (
        "kubernetes.client.api.core_v1_api",
        "kubernetes.dynamic",
        "kubernetes.stream",
        "kubernetes.informer",
        "kubernetes.leaderelection",
        "kubernetes.utils.create_from_yaml",
        "jsonschema",
        "websocket",
    ):
        assert heavy not in loaded
    assert {"kubernetes.client.api_client", "kubernetes.config.kube_config"} <= loaded


def test_the_deferred_packages_are_whole_for_code_that_asks_for_more(kubeconfig: Path) -> None:
    report = _probe(kubeconfig, "whole")
    assert report["nodes"] == 5
    assert report["whole"][1:] == [True] * 6
    assert report["whole"][0].count(".") == 2  # a version string
