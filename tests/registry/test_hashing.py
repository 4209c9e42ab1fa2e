"""The relay's stream hasher: the same digest inline and in worker threads, in order, and safe to drop."""

from __future__ import annotations

import argparse
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from sidecar.hosts import SettingError
from sidecar.oci import parse_digest
from sidecar.registry.hashing import INLINE_BELOW, StreamHasher
from sidecar.settings import resolve

pytestmark = pytest.mark.anyio

# Small and large pieces interleaved: large ones go to the pool, small ones are hashed inline, and
# the digest is only right if every piece reached the hasher in order.
PIECES = [os.urandom(n) for n in (10, INLINE_BELOW, 3 * INLINE_BELOW + 7, 1, 1 << 20, INLINE_BELOW - 1, 5)]
DIGEST = parse_digest("sha256:" + hashlib.sha256(b"".join(PIECES)).hexdigest())


@pytest.mark.parametrize("threads", [0, 1, 3])
async def test_the_digest_matches_hashlib_whatever_the_pool(threads: int) -> None:
    pool = ThreadPoolExecutor(threads) if threads else None
    try:
        hasher = StreamHasher(DIGEST, pool)
        for piece in PIECES:
            await hasher.update(piece)
        assert await hasher.hexdigest() == DIGEST.hex
    finally:
        if pool is not None:
            pool.shutdown()


async def test_a_wrong_body_gives_another_digest() -> None:
    with ThreadPoolExecutor(2) as pool:
        hasher = StreamHasher(DIGEST, pool)
        for piece in reversed(PIECES):
            await hasher.update(piece)
        assert await hasher.hexdigest() != DIGEST.hex


async def test_a_hasher_dropped_mid_blob_leaves_the_pool_usable() -> None:
    with ThreadPoolExecutor(1) as pool:
        abandoned = StreamHasher(DIGEST, pool)
        await abandoned.update(PIECES[4])  # a job may still be running when we walk away
        hasher = StreamHasher(DIGEST, pool)
        for piece in PIECES:
            await hasher.update(piece)
        assert await hasher.hexdigest() == DIGEST.hex


def test_hash_threads_is_a_count_and_a_bad_value_names_the_setting() -> None:
    assert resolve(argparse.Namespace(), env={})["hash_threads"] == 2
    assert resolve(argparse.Namespace(), env={"LOKAL_HASH_THREADS": "0"})["hash_threads"] == 0
    with pytest.raises(SettingError, match=r"^LOKAL_HASH_THREADS: '-1' must be >= 0"):
        resolve(argparse.Namespace(), env={"LOKAL_HASH_THREADS": "-1"})
    with pytest.raises(SettingError, match=r"^--hash-threads: 'two' is not a whole number"):
        resolve(argparse.Namespace(hash_threads="two"), env={})
