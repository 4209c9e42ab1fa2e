"""The supervised advertiser (issue 15, item 1): no burst of store changes can stop advertising for good,
and after one the index is reconciled against `Store.keys()`."""

from __future__ import annotations

import json
from collections.abc import Iterable

import anyio
import pytest

from sidecar.containerd import MemoryStore
from sidecar.containerd.broadcast import SUBSCRIBER_BUFFER
from sidecar.oci import digest_of
from sidecar.routing.router import InMemoryIndex, InMemoryRouter
from sidecar.serve import Advertising

pytestmark = pytest.mark.anyio
NS = "registry.example"


def manifest(i: int) -> bytes:
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(digest_of(b"c")),
              "size": 1}
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": config, "layers": [], "annotations": {"i": str(i)}}).encode()


class BlockedRouter(InMemoryRouter):
    """An index whose sends wait while `gate` is closed: a slow home node, a long advertise round."""

    def __init__(self, index: InMemoryIndex) -> None:
        super().__init__(index, "a", "r1")
        self.open = anyio.Event()

    async def advertise(self, keys: Iterable[str]) -> None:
        await self.open.wait()
        await super().advertise(keys)

    async def withdraw(self, keys: Iterable[str]) -> None:
        await self.open.wait()
        await super().withdraw(keys)


async def test_the_index_equals_the_store_after_more_changes_than_the_stream_holds_while_blocked() -> None:
    store = MemoryStore()
    router = BlockedRouter(InMemoryIndex())
    advertising = Advertising(store, router)
    router.open.set()
    changes = SUBSCRIBER_BUFFER + 100
    async with anyio.create_task_group() as tg:
        await tg.start(advertising.run)
        router.open = anyio.Event()  # blocked from now on: the next send waits
        for i in range(changes):  # every image is a change published to the advertiser's stream
            await store.set_image(f"{NS}/app:v{i}", store.add_blob(manifest(i)))
        for i in range(0, changes, 3):  # and some go away again
            await store.delete_image(f"{NS}/app:v{i}")
        router.open.set()
        with anyio.fail_after(10):
            while router.advertised() != store.keys():
                await anyio.sleep(0.01)
        assert advertising.resubscribed >= 1  # the stream was lost and advertising went on
        # Advertising still follows the store after the burst.
        await store.set_image(f"{NS}/late:v1", store.add_blob(manifest(-1)))
        with anyio.fail_after(5):
            while router.advertised() != store.keys():
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
