"""The known layout the observability tests share: four nodes in two regions and three zones, and an
image whose blobs are spread over them.

    a  r1/z1  127.0.0.2   the node that pulls: holds the manifest and the config
    b  r1/z1  127.0.0.3   same zone as a: holds layer 1
    c  r1/z2  127.0.0.4   same region, other zone: holds layers 1 and 2
    d  r2/z3  127.0.0.5   other region: holds layers 2 and 3
    nobody holds MISSING
"""

from __future__ import annotations

from sidecar.membership import Peer
from sidecar.oci import digest_of
from tests.observability.cluster import NS, image

PEERS = [
    Peer("a", "127.0.0.2", "r1", "z1"),
    Peer("b", "127.0.0.3", "r1", "z1"),
    Peer("c", "127.0.0.4", "r1", "z2"),
    Peer("d", "127.0.0.5", "r2", "z3"),
]
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER1 = bytes(range(256)) * 800  # 204,800 bytes
LAYER2 = b"second layer " * 10_000  # 130,000 bytes
LAYER3 = bytes(reversed(range(256))) * 1200  # 307,200 bytes
MISSING = b"nobody has this blob"
MANIFEST = image(CONFIG, [LAYER1, LAYER2, LAYER3])
IMAGE = f"{NS}/app:v1"
HOLDINGS = {
    "a": [MANIFEST, CONFIG],
    "b": [LAYER1],
    "c": [LAYER1, LAYER2],
    "d": [LAYER2, LAYER3],
}
IMAGES = {"a": {IMAGE: MANIFEST}}


def blob_path(data: bytes) -> str:
    return f"/v2/app/blobs/{digest_of(data)}?ns={NS}"
