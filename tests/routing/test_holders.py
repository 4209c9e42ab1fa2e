"""The holder store: expiry, refresh, withdrawal and the memory bound."""

from __future__ import annotations

import pytest

from sidecar.routing import HolderStore
from tests.routing.cluster import digest

A, B, C = digest("a"), digest("b"), digest("c")


def test_entries_expire_after_the_ttl_and_a_readvertise_refreshes_them() -> None:
    store = HolderStore(ttl=1800)
    store.advertise("n1", [A], [], now=0)
    store.advertise("n2", [A], [], now=0)
    store.advertise("n1", [A], [], now=1000)  # n1 re-advertises, n2 does not
    assert store.lookup(A, now=1799) == ("n1", "n2")
    assert store.lookup(A, now=1800) == ("n1",)
    assert store.lookup(A, now=2800) == ()
    assert store.entries == 0 and store.keys == 0


def test_withdraw_removes_only_that_providers_entry() -> None:
    store = HolderStore(ttl=100)
    store.advertise("n1", [A, B], [], now=0)
    store.advertise("n2", [A], [], now=0)
    store.advertise("n1", [], [A], now=1)
    assert store.lookup(A, now=2) == ("n2",)
    assert store.lookup(B, now=2) == ("n1",)
    assert store.entries == 2


def test_at_the_bound_new_entries_are_refused_and_reported_but_refreshes_still_work() -> None:
    store = HolderStore(ttl=100, max_entries=2)
    assert store.advertise("n1", [A, B], [], now=0).refused == 0
    outcome = store.advertise("n2", [A, C], [], now=1)
    assert (outcome.stored, outcome.refused) == (0, 2)
    assert store.bound_hit and store.refused_total == 2
    assert store.advertise("n1", [A], [], now=2).stored == 1  # a refresh is not a new entry
    assert store.lookup(A, now=101) == ("n1",)  # refreshed at 2, so alive until 102
    assert store.entries == 2


def test_a_full_store_sweeps_expired_entries_to_make_room() -> None:
    store = HolderStore(ttl=100, max_entries=2, sweep_every=10)
    store.advertise("n1", [A, B], [], now=0)
    outcome = store.advertise("n2", [C], [], now=150)
    assert outcome.refused == 0
    assert store.lookup(C, now=151) == ("n2",)
    assert not store.bound_hit


def test_withdrawing_frees_room_under_the_bound() -> None:
    store = HolderStore(ttl=100, max_entries=1)
    store.advertise("n1", [A], [], now=0)
    assert store.advertise("n1", [B], [A], now=1).refused == 0
    assert store.lookup(B, now=2) == ("n1",)


@pytest.mark.parametrize(("ttl", "bound"), [(0, 10), (-1, 10), (10, 0)])
def test_invalid_settings_are_refused_with_a_message_naming_them(ttl: float, bound: int) -> None:
    with pytest.raises(ValueError, match="holder"):
        HolderStore(ttl=ttl, max_entries=bound)
