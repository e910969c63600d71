"""The contract of ``KeyStore``: the server's API keys (the sha256 of each secret, never the
secret), on every backend.

A key is stored once under its id (``Conflict`` for a taken id, revoked or not, writing
nothing), read back exactly, listed oldest first with the revoked ones, and revoked once: the
first revocation time stands, and revoking a key that does not exist is ``NotFound`` and creates
nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from _contract import T0, StoreFactory, handles, race

from memos import Store
from memos.core._store import open_store
from memos.core._types import ApiKey
from memos.errors import Conflict, NotFound


def api_key(key_id: str, principal: str = "alice", minutes: int = 0) -> ApiKey:
    return ApiKey(
        id=key_id,
        principal=principal,
        secret_sha256=hashlib.sha256(key_id.encode()).hexdigest(),
        created_at=T0 + timedelta(minutes=minutes),
    )


def test_api_keys_round_trip_and_revoke(make_store: StoreFactory) -> None:
    store = make_store()
    assert store.list_api_keys() == []
    first, second = api_key("k2", minutes=0), api_key("k1", principal="bob", minutes=1)
    store.put_api_key(first)
    store.put_api_key(second)
    with pytest.raises(Conflict):
        store.put_api_key(api_key("k1", principal="mallory"))
    assert store.get_api_key("k1") == second
    assert store.get_api_key("nope") is None
    assert store.list_api_keys() == [first, second]
    revoked = store.revoke_api_key("k1", T0 + timedelta(hours=1))
    assert revoked == second.model_copy(update={"revoked_at": T0 + timedelta(hours=1)})
    assert store.revoke_api_key("k1", T0 + timedelta(hours=2)) == revoked
    with pytest.raises(NotFound):
        store.revoke_api_key("nope", T0)
    store.close()
    again = open_store(store.url)
    try:
        assert again.list_api_keys() == [first, revoked]
    finally:
        again.close()


def test_a_key_reads_back_exactly(store: Store) -> None:
    tokyo = timezone(timedelta(hours=9))
    keys = [
        api_key("key-0123abcd"),
        ApiKey(
            id="key:with/odd*chars ü",
            principal="bob@example.org",
            secret_sha256="f" * 64,
            created_at=datetime(2030, 6, 30, 23, 59, 59, 999999, tzinfo=tokyo),
        ),
    ]
    for key in keys:
        store.put_api_key(key)
    for key in keys:
        got = store.get_api_key(key.id)
        assert got == key
        assert got is not None
        assert got.revoked_at is None
        assert got.created_at.utcoffset() is not None  # an aware time, the same instant
    # ids are looked up exactly: no prefix, pattern or case match
    for near in ("key-0123", "KEY-0123ABCD", "key-0123abcd ", "key:*", "*", ""):
        assert store.get_api_key(near) is None
    assert store.list_api_keys() == keys


def test_a_taken_id_is_a_conflict_and_writes_nothing(store: Store) -> None:
    original = api_key("k1", principal="alice")
    store.put_api_key(original)
    usurper = ApiKey(
        id="k1", principal="mallory", secret_sha256="0" * 64, created_at=T0 - timedelta(days=1)
    )
    with pytest.raises(Conflict):
        store.put_api_key(usurper)
    with pytest.raises(Conflict):
        store.put_api_key(original)  # the very same key again is no exception
    assert store.get_api_key("k1") == original
    assert store.list_api_keys() == [original]
    # a revoked key's id stays taken: putting it again must not bring the key back
    revoked = store.revoke_api_key("k1", T0 + timedelta(hours=1))
    with pytest.raises(Conflict):
        store.put_api_key(original)
    assert store.get_api_key("k1") == revoked
    assert store.list_api_keys() == [revoked]


def test_revoking_an_unknown_key_is_not_found_and_creates_nothing(store: Store) -> None:
    with pytest.raises(NotFound):
        store.revoke_api_key("k1", T0)  # an empty store
    key = api_key("k1")
    store.put_api_key(key)
    for unknown in ("k2", "K1", "k1 ", ""):
        with pytest.raises(NotFound):
            store.revoke_api_key(unknown, T0)
        assert store.get_api_key(unknown) is None
    assert store.list_api_keys() == [key]
    assert store.get_api_key("k1") == key  # not revoked by a near miss


def test_a_revoked_key_keeps_its_first_revocation_time(store: Store) -> None:
    target, bystander = api_key("k1"), api_key("k2", minutes=1)
    store.put_api_key(target)
    store.put_api_key(bystander)
    first = T0 + timedelta(hours=1)
    revoked = store.revoke_api_key("k1", first)
    assert revoked == target.model_copy(update={"revoked_at": first})
    for later_or_earlier in (first + timedelta(hours=1), first - timedelta(minutes=30), first):
        assert store.revoke_api_key("k1", later_or_earlier) == revoked
    assert store.get_api_key("k1") == revoked
    assert store.get_api_key("k2") == bystander  # revoking one key touches no other
    assert store.list_api_keys() == [revoked, bystander]


def test_keys_are_listed_oldest_first_with_the_revoked_ones(make_store: StoreFactory) -> None:
    store = make_store()
    tokyo = timezone(timedelta(hours=9))
    # written neither in time order nor in id order; one created in another time zone (its
    # wall clock reads later than the others', its instant falls between them)
    made = [
        api_key("a", minutes=30),
        api_key("z", minutes=0),
        ApiKey(
            id="m",
            principal="carol",
            secret_sha256="1" * 64,
            created_at=(T0 + timedelta(minutes=10)).astimezone(tokyo),
        ),
        api_key("b", minutes=20),
        api_key("y", minutes=5),
    ]
    for key in made:
        store.put_api_key(key)
    revoked = {
        "z": store.revoke_api_key("z", T0 + timedelta(days=1)),
        "b": store.revoke_api_key("b", T0 + timedelta(days=2)),
    }
    expected = [revoked.get(k.id, k) for k in sorted(made, key=lambda k: k.created_at)]
    assert [k.id for k in expected] == ["z", "y", "m", "b", "a"]
    assert store.list_api_keys() == expected
    store.close()
    again = open_store(store.url)
    try:
        assert again.list_api_keys() == expected
        assert again.get_api_key("b") == revoked["b"]
    finally:
        again.close()


def test_of_concurrent_puts_of_one_id_exactly_one_lands(store: Store) -> None:
    candidates = [api_key("k1", principal=f"p{n}", minutes=n) for n in range(6)]
    with handles(store, len(candidates)) as stores:
        outcomes = race(stores, lambda other, n: other.put_api_key(candidates[n]))
    landed = [n for n, outcome in enumerate(outcomes) if outcome is None]
    assert len(landed) == 1, outcomes
    assert all(isinstance(o, Conflict) for n, o in enumerate(outcomes) if n != landed[0])
    assert store.get_api_key("k1") == candidates[landed[0]]
    assert store.list_api_keys() == [candidates[landed[0]]]


def test_concurrent_revocations_agree_on_one_time(store: Store) -> None:
    key = api_key("k1")
    store.put_api_key(key)
    times = [T0 + timedelta(hours=n + 1) for n in range(6)]
    with handles(store, len(times)) as stores:
        outcomes = race(stores, lambda other, n: other.revoke_api_key("k1", times[n]))
    assert all(isinstance(o, ApiKey) for o in outcomes), outcomes
    first = outcomes[0]
    assert first.revoked_at in times
    assert all(o == first for o in outcomes)  # every caller saw the one that stands
    assert first == key.model_copy(update={"revoked_at": first.revoked_at})
    assert store.get_api_key("k1") == first
    assert store.revoke_api_key("k1", T0) == first
