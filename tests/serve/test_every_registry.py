"""One spelling for "mirror every registry" (issue 15, item 8): `_default`, which serve and configure both
accept and the docs use; `*` is refused by both, naming the setting."""

from __future__ import annotations

import anyio
import pytest

from sidecar.containerd import MemoryStore
from sidecar.hosts.settings import SettingError
from sidecar.serve import running_node
from sidecar.settings import ConfigureSettings, ServeSettings, read
from tests.nodes import status_of


@pytest.mark.anyio
async def test_serve_with_default_mirrors_a_registry_it_was_never_told_about() -> None:
    store = MemoryStore()
    blob = store.add_blob(b"layer bytes")
    settings = read(ServeSettings, env={"LOKAL_DISCOVERY": "none", "LOKAL_MIRRORED_REGISTRIES": "_default"})
    async with running_node(settings, store=store, listen=("127.0.0.1", 0)) as node:
        assert node.server.address is not None
        port = node.server.address[1]
        path = f"/v2/app/blobs/{blob}?ns=registry.corp.example"
        status = await anyio.to_thread.run_sync(status_of, port, path)
    assert status == 200


@pytest.mark.parametrize("model", [ServeSettings, ConfigureSettings])
def test_a_star_is_refused_by_serve_and_configure_pointing_at_default(model: type[ServeSettings]) -> None:
    with pytest.raises(SettingError, match=r"^LOKAL_MIRRORED_REGISTRIES: .*_default"):
        read(model, env={"LOKAL_MIRRORED_REGISTRIES": "docker.io,*"})
