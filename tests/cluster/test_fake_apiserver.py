"""The fake apiserver behaves like the real one where lokal depends on it (list, watch, 410, bookmarks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from lokal_lab.fake_apiserver import (
    FakeApiServer,
    SelectorError,
    make_node,
    parse_label_selector,
    selector_matches,
)

REGION = "topology.kubernetes.io/region"


@pytest.mark.parametrize(
    ("selector", "matching"),
    [
        ("", {"a", "b", "c"}),
        (f"{REGION}=r1", {"a"}),
        (f"{REGION}==r1", {"a"}),
        (f"{REGION}!=r1", {"b", "c"}),  # includes c, which has no region label
        (f"{REGION} in (r1, r2)", {"a", "b"}),
        (f"{REGION} notin (r1)", {"b", "c"}),
        (REGION, {"a", "b"}),
        (f"!{REGION}", {"c"}),
        (f"{REGION} in (r1,r2),tier=gold", {"b"}),
    ],
)
def test_label_selectors_match_like_the_apiserver(selector: str, matching: set[str]) -> None:
    nodes = [
        make_node("a", region="r1"),
        make_node("b", region="r2", labels={"tier": "gold"}),
        make_node("c"),
    ]
    requirements = parse_label_selector(selector)
    assert {n["metadata"]["name"] for n in nodes if selector_matches(requirements, n)} == matching


@pytest.mark.parametrize("selector", ["a=b=c", "a in b", "a in ()", "=x", "a,,b", "a notin (x y)"])
def test_malformed_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(selector)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    nodes = [make_node("a", region="r1", address="10.0.0.1"), make_node("b", region="r2", address="10.0.0.2")]
    with FakeApiServer(nodes, bookmark_interval_s=0.2) as api:
        yield api


def get(api: FakeApiServer, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(api.url + path, timeout=10) as response:
            return response.status, [json.loads(line) for line in response.read().splitlines() if line]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_list_carries_the_resource_version_and_a_bad_selector_is_a_400(fake: FakeApiServer) -> None:
    status, [body] = get(fake, f"/api/v1/nodes?labelSelector={REGION}%3Dr2")
    assert status == 200 and body["kind"] == "NodeList"
    assert body["metadata"]["resourceVersion"] == str(fake.resource_version)
    assert [n["metadata"]["name"] for n in body["items"]] == ["b"]
    status, body = get(fake, "/api/v1/nodes?labelSelector=a%20in%20b")
    assert status == 400 and body["reason"] == "BadRequest"


def test_a_selected_watch_turns_selector_transitions_into_added_and_deleted(fake: FakeApiServer) -> None:
    start = fake.resource_version
    fake.relabel("b", {REGION: "r1"})  # starts matching
    fake.relabel("a", {"other": "x"})  # still matches
    moved_out = fake.relabel("a", {REGION: "r3"})  # stops matching
    fake.delete_node("b")
    status, events = get(
        fake, f"/api/v1/nodes?watch=1&resourceVersion={start}&timeoutSeconds=1&labelSelector={REGION}%3Dr1"
    )
    assert status == 200
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
        ("DELETED", "b"),
    ]
    gone = events[2]["object"]
    assert gone["metadata"]["labels"][REGION] == "r1"  # the previous content...
    assert gone["metadata"]["resourceVersion"] == str(moved_out)  # ...at the version it stopped matching


def test_a_watch_without_version_starts_with_the_current_state_and_sends_bookmarks(
    fake: FakeApiServer,
) -> None:
    status, events = get(fake, "/api/v1/nodes?watch=true&allowWatchBookmarks=true&timeoutSeconds=3")
    assert status == 200
    assert [e["type"] for e in events[:2]] == ["ADDED", "ADDED"]
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[-1]["object"]["metadata"]["resourceVersion"] == str(fake.resource_version)
    # Like the 1.20 cacher: none in the last 2 s before the deadline, so a watch of 2 s or less gets none.
    status, short = get(fake, "/api/v1/nodes?watch=true&allowWatchBookmarks=true&timeoutSeconds=2")
    assert status == 200 and [e["type"] for e in short] == ["ADDED", "ADDED"]


def test_after_a_compaction_an_old_version_gets_410(fake: FakeApiServer) -> None:
    old = fake.resource_version
    fake.relabel("a", {"x": "1"})
    last = fake.relabel("a", {"x": "2"})
    fake.compact()
    status, events = get(fake, f"/api/v1/nodes?watch=1&resourceVersion={old}&timeoutSeconds=1")
    assert status == 200 and events[0]["type"] == "ERROR"
    assert (events[0]["object"]["code"], events[0]["object"]["reason"]) == (410, "Expired")
    status, body = get(fake, f"/api/v1/nodes?resourceVersion={old}&resourceVersionMatch=Exact")
    assert status == 410 and body["reason"] == "Expired"
    status, events = get(
        fake, f"/api/v1/nodes?watch=1&resourceVersion={fake.resource_version}&timeoutSeconds=1"
    )
    assert status == 200 and events == []
    # Like etcd: a watch from X starts at X+1, so the version just before the compacted one still works.
    status, events = get(fake, f"/api/v1/nodes?watch=1&resourceVersion={last - 1}&timeoutSeconds=1")
    assert status == 200 and [e["type"] for e in events] == ["MODIFIED"]


def test_a_token_is_required_when_configured(tmp_path: Path) -> None:
    with FakeApiServer([make_node("a")], token="s3cret") as api:
        assert get(api, "/api/v1/nodes")[0] == 401
        configuration = client.Configuration()
        config.load_kube_config(
            config_file=str(api.write_kubeconfig(tmp_path / "kc")), client_configuration=configuration
        )
        nodes = client.CoreV1Api(client.ApiClient(configuration)).list_node(_request_timeout=(2, 5))
        assert [n.metadata.name for n in nodes.items] == ["a"]


def test_runs_as_a_process_and_takes_changes_over_http_and_sighup(tmp_path: Path) -> None:
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps([make_node("a", region="r1")]))
    kubeconfig = tmp_path / "kubeconfig"
    command = [sys.executable, "-m", "lokal_lab.fake_apiserver", "--listen", "127.0.0.1:0"]
    command += ["--nodes", str(nodes_file), "--kubeconfig-out", str(kubeconfig), "--token", "t"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        url = ready["url"]
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        core = client.CoreV1Api(client.ApiClient(configuration))

        def names() -> list[str]:
            return [n.metadata.name for n in core.list_node(_request_timeout=(2, 5)).items]

        assert names() == ["a"]
        request = urllib.request.Request(
            url + "/_fake/nodes", data=json.dumps(make_node("b")).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        assert names() == ["a", "b"]
        nodes_file.write_text(json.dumps({"kind": "NodeList", "items": [make_node("c")]}))
        os.kill(process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10  # a hang guard
        while names() != ["c"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert names() == ["c"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
