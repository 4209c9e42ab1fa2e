"""Fuzzing the running processes with hypothesis (bounded example counts, no shrinking phase so that the time
is bounded too): the HTTP request path of a lokal, its peer protocol, and the Node objects it watches.

The in-process fuzzers of the codecs and parsers are in tests/http, tests/routing and tests/cluster; these
go through real sockets into the real `lokal serve` processes of the lab, and check that nothing crashes,
every reply is well-formed, and the state stays consistent afterwards.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from lokal_lab.cluster import LabCluster
from lokal_lab.images import BuiltImage

from sidecar.routing.placement import home_nodes
from tests.reliability.conftest import REGION_A, MakeImage
from tests.reliability.labtools import (
    LOCAL_ONLY,
    Agent,
    advertise,
    agents,
    blob_path,
    fake_api,
    fetched_blobs,
    lookup,
    peer_names,
    pull_checked,
    wait_until,
    wait_until_listed,
    with_token,
)

pytestmark = pytest.mark.lab

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def lab_agents(cluster: LabCluster) -> Iterator[dict[str, Agent]]:
    with agents(cluster, *cluster.nodes) as started:
        yield started


@pytest.fixture(scope="module")
def held(cluster: LabCluster, images: MakeImage, lab_agents: dict[str, Agent]) -> tuple[str, BuiltImage]:
    """An image only node-1 holds."""
    image = images("fuzz", 601)
    reference = cluster.push(image, "fuzz/app")
    pull_checked(cluster, "node-1", reference, image)
    wait_until_listed(cluster, lab_agents["node-3"], fetched_blobs(image), {"node-1"}, REGION_A)
    return reference, image


def alive_and_serving(cluster: LabCluster, agent: Agent, image: BuiltImage) -> None:
    """The lokal in `agent`'s namespace still runs, and serves a held layer whole and correct."""
    assert cluster.lokal_running(agent.host)
    assert agent.request("127.0.0.1", "/healthz")["status"] == 200
    layer = image.layers["linux/amd64"][0].digest
    reply = agent.request("127.0.0.1", blob_path(cluster, "fuzz/app", layer))
    assert (reply["status"], reply["complete"], reply["sha256"]) == (200, True, layer)


# ---- the HTTP request path ----

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"])
paths = st.one_of(
    st.sampled_from(["/v2/", "/v2", "/healthz", "/readyz", "/metrics", "/_lokal/debug/status", "*", ""]),
    st.builds(
        lambda repo, digest, ns: f"/v2/{repo}/blobs/sha256:{digest}?ns={ns}",
        st.sampled_from(["fuzz/app", "a", "library/x"]),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        st.sampled_from(["docker.io", "198.18.0.2:5000", "x"]),
    ),
    st.builds(
        lambda repo, kind, ref, query: f"/v2/{repo}/{kind}/{ref}{query}",
        st.text(alphabet=string.ascii_lowercase + "/._-%", max_size=40),
        st.sampled_from(["blobs", "manifests", "tags", "blobs/uploads"]),
        st.one_of(
            st.text(alphabet=string.hexdigits + ":sha256512", max_size=140),
            st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass").hex()),
        ),
        st.sampled_from(["", "?ns=docker.io", "?ns=", "?ns=a&ns=b", "?ns=%ff", "?" + "x" * 300]),
    ),
    st.text(max_size=200).map(lambda t: "/" + t.encode("utf-8", "surrogatepass").decode("latin-1")),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
)
header_names = st.one_of(
    st.sampled_from(
        [
            "Range",
            "Content-Length",
            "Transfer-Encoding",
            "Host",
            "Connection",
            "Expect",
            "X-Lokal-Local-Only",
            "X-Lokal-Token",
            "Accept",
        ]
    ),
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=30),
    st.binary(max_size=30).map(lambda b: b.decode("latin-1")),
)
header_values = st.one_of(
    st.sampled_from(
        [
            "bytes=0-10",
            "bytes=-5",
            "bytes=5-1",
            "bytes=0-0,2-3",
            "chunked",
            "-1",
            "99999999999",
            "close",
            "100-continue",
            "gzip, chunked",
        ]
    ),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass").decode("latin-1")),
    st.integers(min_value=0, max_value=20_000).map(lambda n: "a" * n),
)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2000))
    version = draw(st.sampled_from(["HTTP/1.1"] * 6 + ["HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""]))
    line = f"{draw(methods)} {draw(paths)} {version}"
    if draw(st.booleans()):  # half the requests carry only well-formed headers: deeper into the handler
        safe = st.tuples(
            st.sampled_from(["Range", "X-Lokal-Local-Only", "Accept", "Host"]),
            st.sampled_from(["bytes=0-10", "bytes=-5", "bytes=5-1", "bytes=0-0,2-3", "1", "*/*"]),
        )
        headers = draw(st.lists(safe, max_size=4))
    else:
        headers = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
    text = line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    body = draw(st.binary(max_size=200))
    ending = draw(st.sampled_from(["\r\n"] * 5 + ["\n", "", "\r\n\r\n"]))
    return (text + ending).encode("latin-1") + body


def test_random_requests_get_well_formed_replies_and_lokal_keeps_serving(
    cluster: LabCluster, held: tuple[str, BuiltImage], lab_agents: dict[str, Agent]
) -> None:
    _, image = held
    agent = lab_agents["node-1"]  # loopback: past admission, into request planning and the store
    statuses: dict[int | None, int] = {}

    @BOUNDED
    @given(requests())
    def one(data: bytes) -> None:
        reply = agent.raw("127.0.0.1", data)
        statuses[reply["status"]] = statuses.get(reply["status"], 0) + 1
        assert reply["wellformed"], (data[:300], reply)
        assert reply["status"] is None or 200 <= reply["status"] < 600, reply
        assert reply["status"] != 500, (data[:300], reply)  # 500: an exception escaped a handler

    one()
    print(f"HTTP fuzz statuses: {dict(sorted(statuses.items(), key=lambda kv: str(kv[0])))}")
    alive_and_serving(cluster, agent, image)


# ---- the peer protocol ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)


def peer_bodies(key: str) -> st.SearchStrategy[tuple[str, bytes]]:
    digest_like = st.one_of(
        st.just(key),
        st.just("sha256:" + "0" * 64),
        st.text(alphabet=string.hexdigits, min_size=60, max_size=70).map(lambda h: "sha256:" + h),
        st.text(max_size=100),
    )
    keys = st.lists(digest_like, max_size=5)
    documents = st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={"add": keys, "remove": keys}),
        st.fixed_dictionaries({"keys": keys}),
        st.fixed_dictionaries({"add": json_values, "remove": json_values, "keys": json_values}),
        st.dictionaries(st.sampled_from(["add", "remove", "keys", "node", "name"]), json_values, max_size=3),
    )
    encoded = documents.map(lambda d: json.dumps(d).encode())
    bodies = st.one_of(
        encoded,
        st.tuples(encoded, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),  # truncated
        st.binary(max_size=300),
        st.sampled_from([b"", b"[]", b"{", b"null", b'{"keys":[' * 5000, b"NaN", b'{"add":[],"add":[]}']),
        st.integers(1, 3).map(lambda n: b'{"keys":["' + b"a" * (1024 * 1024 + n) + b'"]}'),  # over 1 MiB
    )
    return st.tuples(st.sampled_from(["advertise", "lookup"]), bodies)


def test_random_peer_messages_get_400_or_413_and_the_index_still_answers_correctly(
    cluster: LabCluster, held: tuple[str, BuiltImage], lab_agents: dict[str, Agent]
) -> None:
    _, image = held
    key = image.layers["linux/amd64"][0].digest
    home = home_nodes(key, REGION_A)[0]
    sender = lab_agents["node-2"]  # a member with the token: past the gate, into the codec and the index
    address = cluster.lab.address(home)
    statuses: dict[int, int] = {}

    @BOUNDED
    @given(peer_bodies(key))
    def one(message: tuple[str, bytes]) -> None:
        call, body = message
        reply = sender.request(
            address,
            f"/_lokal/v1/{call}",
            method="POST",
            body=body,
            headers=with_token({"Content-Type": "application/json"}),
        )
        statuses[reply["status"]] = statuses.get(reply["status"], 0) + 1
        assert reply["wellformed"] and reply["status"] in (200, 400, 413), (call, body[:200], reply)
        if len(body) > 1024 * 1024:
            assert reply["status"] == 413

    one()
    print(f"peer protocol fuzz statuses: {statuses}")
    # Whatever node-2 claimed, node-1's entry is untouched; withdrawing node-2's leaves exactly node-1.
    assert advertise(sender, cluster, home, {"remove": [key]}) == 200
    assert lookup(lab_agents["node-3"], cluster, home, key) == (200, {"node-1"})
    assert cluster.lokal_running(home)
    alive_and_serving(cluster, lab_agents["node-1"], image)


# ---- Node objects through the fake API server ----

# Only lab-range, unique-local and junk addresses: a fuzzed peer address must never lead out of the lab.
lab_addresses = st.one_of(
    st.tuples(st.integers(18, 19), st.integers(0, 255), st.integers(1, 254)).map(
        lambda t: f"198.{t[0]}.{t[1]}.{t[2]}"
    ),
    st.integers(0, 2**16 - 1).map(lambda n: f"fd00::{n:x}"),
    st.sampled_from(["", "not-an-ip", "198.18.0.256", "::ffff:198.18.1.1", "198.18.1.1/24", "0.0.0.0"]),
    st.text(max_size=40),
)
label_values = st.one_of(
    st.sampled_from(["region-a", "zone-a1", "region-b", "", "-bad-", "a" * 64, "Region_A.1"]),
    st.text(max_size=70),
    json_values,
)


@st.composite
def node_objects(draw: st.DrawFn, index: int) -> dict[str, Any]:
    name = f"fuzz-{index}-" + draw(
        st.text(alphabet=string.ascii_lowercase + string.digits + "-.", max_size=20)
    )
    labels = draw(
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "topology.kubernetes.io/region",
                        "topology.kubernetes.io/zone",
                        "failure-domain.beta.kubernetes.io/region",
                        "failure-domain.beta.kubernetes.io/zone",
                        "kubernetes.io/hostname",
                    ]
                ),
                st.text(max_size=40),
            ),
            label_values,
            max_size=6,
        )
    )
    addresses = draw(
        st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["InternalIP", "ExternalIP", "Hostname"]),
                        "address": lab_addresses,
                    }
                ),
                json_values,
            ),
            max_size=draw(st.sampled_from([3, 3, 200])),
        )
    )
    conditions = draw(
        st.one_of(
            st.just([{"type": "Ready", "status": "True"}]),
            st.lists(
                st.fixed_dictionaries(
                    {
                        "type": st.sampled_from(["Ready", "x"]),
                        "status": st.sampled_from(["True", "False", "Unknown", 1]),
                    }
                ),
                max_size=3,
            ),
            json_values,
        )
    )
    node: dict[str, Any] = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name}}
    if draw(st.booleans()):
        node["metadata"]["labels"] = labels
    if draw(st.booleans()):
        node["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    shape = draw(st.sampled_from(["full", "no status", "status not a dict", "addresses not a list"]))
    if shape == "full":
        node["status"] = {"addresses": addresses, "conditions": conditions}
    elif shape == "status not a dict":
        node["status"] = draw(json_values)
    elif shape == "addresses not a list":
        node["status"] = {"addresses": draw(json_values)}
    return node


def test_odd_node_objects_never_take_lokal_down_and_the_membership_returns_to_the_real_nodes(
    cluster: LabCluster, held: tuple[str, BuiltImage], lab_agents: dict[str, Agent]
) -> None:
    reference, image = held
    counter = iter(range(10_000))
    with fake_api(cluster) as api:
        put: set[str] = set()
        try:

            @settings(BOUNDED, max_examples=40)
            @given(st.data())
            def one(data: st.DataObject) -> None:
                node = data.draw(node_objects(next(counter)))
                api.put(node)
                put.add(node["metadata"]["name"])
                if data.draw(st.booleans()):  # some go again at once: add and delete in one watch batch
                    api.delete(node["metadata"]["name"])
                    put.discard(node["metadata"]["name"])

            one()
            running_during = {n: cluster.lokal_running(n) for n in cluster.nodes}
        finally:
            for name in put:
                api.delete(name)
        real = set(cluster.nodes)
        wait_until(
            lambda: all(peer_names(lab_agents[n]) == real - {n} for n in cluster.nodes),
            60,
            "every lokal's membership to be the lab's nodes again",
        )
    assert all(running_during.values()), running_during
    assert all(cluster.lokal_running(n) for n in cluster.nodes)
    pulled = pull_checked(cluster, "node-2", reference, image)  # relays still work
    assert pulled.upstream_blobs == set()
    reply = lab_agents["node-3"].request(
        cluster.lab.address("node-1"),
        blob_path(cluster, "fuzz/app", image.layers["linux/amd64"][0].digest),
        headers=with_token(LOCAL_ONLY),
    )
    assert reply["status"] == 200 and reply["complete"]
