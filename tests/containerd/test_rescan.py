"""The rescan against a real containerd: it never overwrites a newer event, and its cost in containerd
calls stays the same however many layers the node holds (it used to be one Info call per layer)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from lokal_lab.containerd import ContainerdInstance
from lokal_lab.images import build_image
from lokal_lab.registry import RegistryInstance

from sidecar.containerd import ContainerdStore
from sidecar.containerd.rescan import merge
from sidecar.oci import tag_key
from tests.containerd.harness import ContainerdHarness

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("registry")]

_seeds = itertools.count(5000)


class CountingClient:
    """The store's real containerd client, with every call counted; `hold` pauses one method after it
    has answered, until released (to let an event land in the middle of a rescan)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.hold: dict[str, anyio.Event] = {}
        self.held = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not callable(method) or name == "subscribe":
            return method

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            answer = await method(*args, **kwargs)
            release = self.hold.pop(name, None)
            if release is not None:
                self.held.set()
                await release.wait()
            return answer

        return counted


def counting(store: ContainerdStore) -> CountingClient:
    spy = CountingClient(store._client)
    store._client = spy  # type: ignore[assignment]
    return spy


async def calls_of(spy: CountingClient, step: Callable[[], Awaitable[None]]) -> int:
    spy.calls.clear()
    await step()
    return sum(spy.calls.values())


async def pull(harness: ContainerdHarness, tmp_path: Path, layers: int, repository: str) -> str:
    seed = next(_seeds)
    image = build_image(tmp_path / f"layout-{seed}", "v1", [2000 + i for i in range(layers)], seed=seed)
    return await harness.pull(image, repository)


def key_of(reference: str) -> str:
    registry_name, rest = reference.split("/", 1)
    repository, tag = rest.rsplit(":", 1)
    return tag_key(registry_name, repository, tag)


async def delete_image_record(containerd: ContainerdInstance, name: str) -> None:
    """Delete one image record (the tag), as `ctr images rm` does: the digest-named records of the same
    image keep its content, so a rescan that read them before the delete could still bring the tag back."""
    command = ["ctr", "--address", str(containerd.socket), "-n", "k8s.io", "images", "rm", name]
    await anyio.run_process(command)


def indexed(store: ContainerdStore, key: str) -> bool:
    return {key} <= store.keys()


async def wait_for(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(15):
        while not condition():
            await anyio.sleep(0.05)


async def test_a_rescan_costs_the_same_calls_with_two_layers_or_twenty_two(
    containerd: ContainerdInstance, registry: RegistryInstance, tmp_path: Path
) -> None:
    # No event loop here: every call counted is the rescan's own.
    harness = ContainerdHarness(containerd, registry)
    store = harness.store
    spy = counting(store)
    await pull(harness, tmp_path, 2, "rescan/small")
    await store.rescan()  # the first sight of a target walks it
    small = await calls_of(spy, store.rescan)
    reference = await pull(harness, tmp_path, 20, "rescan/large")
    await store.rescan()
    large = await calls_of(spy, store.rescan)
    assert indexed(store, key_of(reference))
    assert store.keys() == await store.list_keys()  # cheap, and still right
    await store.aclose()
    assert small == large == 2  # List images, List content


async def test_a_rescan_never_brings_back_an_image_deleted_while_it_ran(
    containerd: ContainerdInstance, registry: RegistryInstance, tmp_path: Path
) -> None:
    harness = ContainerdHarness(containerd, registry)
    store = harness.store
    spy = counting(store)
    reference = await pull(harness, tmp_path, 2, "rescan/deleted")
    key = key_of(reference)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        assert indexed(store, key)
        release = spy.hold["list_images"] = anyio.Event()  # the rescan has listed: the image is in it
        finished = anyio.Event()

        async def rescan() -> None:
            await store.rescan()
            finished.set()

        tg.start_soon(rescan)
        await spy.held.wait()
        await delete_image_record(containerd, reference)
        await wait_for(lambda: not indexed(store, key))  # the delete event was applied meanwhile
        release.set()
        with anyio.fail_after(15):
            await finished.wait()
        assert not indexed(store, key)  # the rescan's older view did not undo the event
        assert store.keys() == await store.list_keys()
        tg.cancel_scope.cancel()
    await store.aclose()


def test_a_merge_keeps_every_event_since_the_scan_began() -> None:
    current = {"changed": frozenset({"sha256:new"}), "kept": frozenset({"sha256:k"})}
    scanned = {"changed": frozenset({"sha256:old"}), "deleted": frozenset({"sha256:d"}),
               "kept": frozenset({"sha256:k", "sha256:gone"}), "missed": frozenset({"sha256:m"})}
    merged = merge(current, scanned, touched={"changed", "deleted"}, deleted={"sha256:gone"})
    assert merged == {"changed": frozenset({"sha256:new"}), "kept": frozenset({"sha256:k"}),
                      "missed": frozenset({"sha256:m"})}
