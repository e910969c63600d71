"""The contract of ``AccessLog``: use counts and decayed frequencies, kept beside the items, on
every backend.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from _contract import T0, StoreFactory, cube_info, handles, race

from memos import Store
from memos.core._access import CO_ACCESS_TOP, Use
from memos.core._store import open_store


def test_access_is_counted_and_decays(store: Store) -> None:
    store.create_cube(cube_info("c"), actor="alice")
    day = 24 * 3600.0
    store.record_access(["a", "b", "a"], T0, half_life_s=day)
    store.record_access(["a"], T0 + timedelta(days=1), half_life_s=day)
    stats = store.access_stats(["a", "b", "never"])
    assert set(stats) == {"a", "b"}
    assert stats["a"].count == 2
    assert stats["b"].count == 1
    assert stats["a"].last_access == T0 + timedelta(days=1)
    assert stats["a"].frequency == pytest.approx(1.5)
    assert stats["b"].frequency == pytest.approx(1.0)


def test_nothing_recorded_means_no_stats(store: Store) -> None:
    assert store.access_stats([]) == {}
    assert store.access_stats(["a", "never"]) == {}
    store.record_access([], T0, half_life_s=3600.0)  # recording no use records nothing
    assert store.access_stats(["a"]) == {}


def test_access_stats_outlive_the_handle_and_reach_every_handle(make_store: StoreFactory) -> None:
    store = make_store()
    store.record_access(["a", "b"], T0, half_life_s=3600.0)
    with handles(store, 1) as (other,):
        other.record_access(["a"], T0 + timedelta(hours=1), half_life_s=3600.0)
        assert store.access_stats(["a", "b"]) == other.access_stats(["a", "b"])
    expected = store.access_stats(["a", "b"])
    assert expected["a"].count == 2
    assert expected["a"].frequency == pytest.approx(1.5)
    store.close()
    again = open_store(store.url)
    try:
        assert again.access_stats(["a", "b"]) == expected
    finally:
        again.close()


def test_concurrent_uses_are_all_counted(store: Store) -> None:
    with handles(store, 6) as stores:
        outcomes = race(
            stores, lambda other, n: other.record_access(["a", f"only-{n}"], T0, 3600.0)
        )
    assert outcomes == [None] * 6
    stats = store.access_stats(["a", *(f"only-{n}" for n in range(6))])
    assert stats["a"].count == 6
    assert stats["a"].frequency == pytest.approx(6.0)
    assert all(stats[f"only-{n}"].count == 1 for n in range(6))


# uses: accesses and co-accesses of a cube's memories, recorded in batches ------------------


def test_a_batch_of_uses_counts_items_and_pairs(store: Store) -> None:
    day = 24 * 3600.0
    uses = [
        Use(("a", "b", "c"), T0),
        Use(("b", "a"), T0 + timedelta(days=1)),
        Use(("d",), T0 + timedelta(days=1)),
    ]
    store.record_uses("c1", uses, half_life_s=day)
    stats = store.cube_access("c1")
    assert set(stats) == {"a", "b", "c", "d"}
    assert (stats["a"].count, stats["c"].count) == (2, 1)
    assert stats["a"].frequency == pytest.approx(1.5)
    assert stats["a"].last_access == T0 + timedelta(days=1)
    pairs = store.co_access("c1")
    assert set(pairs) == {("a", "b"), ("a", "c"), ("b", "c")}
    assert pairs[("a", "b")].count == 2
    assert pairs[("a", "b")].frequency == pytest.approx(1.5)
    assert pairs[("b", "c")].last_access == T0
    assert store.access_stats(["a"]) == {"a": stats["a"]}  # the same per-item stats


def test_uses_are_per_cube_and_add_up_across_batches(store: Store) -> None:
    store.record_uses("c1", [Use(("a", "b"), T0)], half_life_s=3600.0)
    store.record_uses("c2", [Use(("x", "y"), T0)], half_life_s=3600.0)
    store.record_uses("c1", [Use(("b", "a"), T0 + timedelta(hours=1))], half_life_s=3600.0)
    assert set(store.cube_access("c1")) == {"a", "b"}
    assert set(store.cube_access("c2")) == {"x", "y"}
    assert store.co_access("c1")[("a", "b")].count == 2
    assert store.co_access("c1")[("a", "b")].frequency == pytest.approx(1.5)
    assert set(store.co_access("c2")) == {("x", "y")}
    assert store.cube_access("none") == {}
    assert store.co_access("none") == {}
    store.record_uses("c1", [], half_life_s=3600.0)  # an empty batch records nothing
    assert store.cube_access("c1")["a"].count == 2


def test_pairs_are_counted_among_a_uses_best_memories_only(store: Store) -> None:
    ranked = tuple(f"m{n:02d}" for n in range(CO_ACCESS_TOP + 3))
    store.record_uses("c1", [Use(ranked, T0)], half_life_s=3600.0)
    assert len(store.cube_access("c1")) == len(ranked)  # every memory is counted
    named = {x for pair in store.co_access("c1") for x in pair}
    assert named == set(ranked[:CO_ACCESS_TOP])
    assert len(store.co_access("c1")) == CO_ACCESS_TOP * (CO_ACCESS_TOP - 1) // 2


def test_concurrent_batches_of_uses_are_all_counted(store: Store) -> None:
    with handles(store, 4) as stores:
        outcomes = race(
            stores, lambda other, n: other.record_uses("c1", [Use(("a", "b"), T0)], 3600.0)
        )
    assert outcomes == [None] * 4
    assert store.cube_access("c1")["a"].count == 4
    assert store.co_access("c1")[("a", "b")].count == 4
