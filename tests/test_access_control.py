"""Principals, ownership and grants (DESIGN invariant 7), through ``mos.as_principal``.

A principal sees a cube only as its owner or through a grant; every call another tenant makes
with a cube's name or an item's id gets the same not-found error an absent one gets, and changes
nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memos import HashEmbedder, MemOS
from memos.core._types import Access, EventOp
from memos.errors import AccessDenied, CubeNotFound, InvalidInput, ItemNotFound, NotFound

DIARY = "alice:diary"  # the full name of alice's cube "diary", as others name it


@dataclass
class Tenants:
    operator: MemOS
    alice: MemOS
    bob: MemOS
    item: str


@pytest.fixture
def tenants(mos: MemOS) -> Tenants:
    alice = mos.as_principal("alice")
    alice.create_cube("diary")
    item = alice.add("alice keeps her spare key under the blue flowerpot", cube="diary")
    alice.update(item.id, "alice keeps her spare key under the red flowerpot")
    return Tenants(mos, alice, mos.as_principal("bob"), item.id)


def _state(mos: MemOS) -> list[Any]:
    return [(e.seq, e.hash) for info in mos.list_cubes() for e in mos.log(info.name)]


# every call bob could make on alice's cube, by what it names
CUBE_CALLS: dict[str, Callable[[MemOS, str], object]] = {
    "get_cube": lambda m, c: m.get_cube(c),
    "add": lambda m, c: m.add("bob was here", cube=c),
    "add_many": lambda m, c: m.add_many(["bob was here"], cube=c),
    "search": lambda m, c: m.search("spare key", cube=c),
    "log": lambda m, c: m.log(c),
    "verify": lambda m, c: m.verify(c),
    "rollback_cube": lambda m, c: m.rollback_cube(c, to_seq=1),
    "refit": lambda m, c: m.refit(c),
    "reencode": lambda m, c: m.reencode(c, codec="fp16"),
    "cube_stats": lambda m, c: m.cube_stats(c),
    "grant": lambda m, c: m.grant(c, "bob", "write"),
    "revoke": lambda m, c: m.revoke(c, "carol"),
    "chat": lambda m, c: m.chat("where is the key?", cube=c),
    "kv.list": lambda m, c: m.kv.list(c),
    "kv.build": lambda m, c: m.kv.build(c, query="key"),
    "kv.drop": lambda m, c: m.kv.drop(c, "kv-anything"),
    "lora.list": lambda m, c: m.lora.list(c),
    "lora.show": lambda m, c: m.lora.show(c, "facts"),
    "lora.consolidate": lambda m, c: m.lora.consolidate(c, query="key", name="stolen"),
    "lora.attach": lambda m, c: m.lora.attach(c, "facts"),
    "lora.delete": lambda m, c: m.lora.delete(c, "facts"),
}
ITEM_CALLS: dict[str, Callable[[MemOS, str], object]] = {
    "get": lambda m, i: m.get(i),
    "update": lambda m, i: m.update(i, "bob was here"),
    "delete": lambda m, i: m.delete(i),
    "rollback": lambda m, i: m.rollback(i, to_version=1),
    "history": lambda m, i: m.history(i),
    "diff": lambda m, i: m.diff(i, 1, 2),
}


@pytest.mark.parametrize("call", sorted(CUBE_CALLS))
def test_another_tenants_cube_does_not_exist(tenants: Tenants, call: str) -> None:
    before = _state(tenants.operator)
    with pytest.raises(CubeNotFound) as seen:
        CUBE_CALLS[call](tenants.bob, DIARY)
    with pytest.raises(CubeNotFound) as absent:
        CUBE_CALLS[call](tenants.bob, "alice:no-such-cube")
    with pytest.raises(CubeNotFound):
        CUBE_CALLS[call](tenants.bob, "diary")  # bob's own "diary", which he has not made
    # the error does not tell an existing cube from an absent one
    assert str(seen.value).replace(DIARY, "?") == str(absent.value).replace(
        "alice:no-such-cube", "?"
    )
    assert _state(tenants.operator) == before


@pytest.mark.parametrize("call", sorted(ITEM_CALLS))
def test_another_tenants_item_does_not_exist(tenants: Tenants, call: str) -> None:
    before = _state(tenants.operator)
    with pytest.raises(ItemNotFound) as seen:
        ITEM_CALLS[call](tenants.bob, tenants.item)
    with pytest.raises(ItemNotFound) as absent:
        ITEM_CALLS[call](tenants.bob, "0" * 32)
    assert str(seen.value).replace(tenants.item, "?") == str(absent.value).replace("0" * 32, "?")
    assert _state(tenants.operator) == before


def test_another_tenant_lists_and_counts_nothing(tenants: Tenants) -> None:
    assert [c.name for c in tenants.alice.list_cubes()] == [DIARY]
    assert tenants.bob.list_cubes() == []
    assert tenants.bob.verify_all() == []
    tenants.operator.store.record_access(
        [tenants.item], tenants.operator.get(tenants.item).created_at, 60.0
    )
    assert set(tenants.alice.access_stats([tenants.item])) == {tenants.item}
    assert tenants.bob.access_stats([tenants.item]) == {}


def test_a_principal_creates_cubes_for_itself_only(tenants: Tenants) -> None:
    assert tenants.bob.create_cube("notes").owner == "bob"
    with pytest.raises(AccessDenied):
        tenants.bob.create_cube("forged", owner="alice")
    assert [c.name for c in tenants.operator.list_cubes()] == [DIARY, "bob:notes"]


def test_a_read_grant_lets_read_and_not_write(tenants: Tenants) -> None:
    tenants.alice.grant("diary", "bob", "read")
    assert tenants.bob.get(tenants.item).version == 2
    assert [h.item.id for h in tenants.bob.search("spare key", cube=DIARY)] == [tenants.item]
    assert tenants.bob.verify(DIARY).ok
    before = _state(tenants.operator)
    for write in (
        lambda: tenants.bob.add("bob was here", cube=DIARY),
        lambda: tenants.bob.update(tenants.item, "bob was here"),
        lambda: tenants.bob.delete(tenants.item),
        lambda: tenants.bob.rollback_cube(DIARY, to_seq=1),
        lambda: tenants.bob.grant(DIARY, "carol"),
    ):
        with pytest.raises(AccessDenied):
            write()
    assert _state(tenants.operator) == before


def test_a_write_grant_lets_write_under_the_principals_own_name(tenants: Tenants) -> None:
    tenants.alice.grant("diary", "bob", "write")
    added = tenants.bob.add("bob borrowed the key", cube=DIARY, user="alice")
    tenants.bob.delete(tenants.item, user="alice")
    events = tenants.operator.log(DIARY)
    assert [e.actor for e in events[-2:]] == ["bob", "bob"]
    assert added.user == "alice"  # the item's user field is data; the actor is who acted
    with pytest.raises(AccessDenied):
        tenants.bob.revoke(DIARY, "bob")


def test_grants_are_events_that_verify_export_and_revoke(tenants: Tenants, tmp_path: Path) -> None:
    tenants.alice.grant("diary", "bob", "read", reason="shared for the trip")
    tenants.alice.grant("diary", "bob", "write")
    assert tenants.alice.get_cube("diary").grants == {"bob": Access.WRITE}
    tenants.alice.revoke("diary", "bob")
    ops = [e.op for e in tenants.operator.log(DIARY)]
    assert ops[-3:] == [EventOp.GRANT, EventOp.GRANT, EventOp.REVOKE]
    grant = tenants.operator.log(DIARY)[-3]
    assert grant.actor == "alice"
    assert grant.reason == "shared for the trip"
    assert grant.payload is not None
    assert (grant.payload["principal"], grant.payload["access"]) == ("bob", "read")
    assert tenants.operator.verify(DIARY).ok
    with pytest.raises(CubeNotFound):
        tenants.bob.get_cube(DIARY)
    tenants.alice.grant("diary", "carol")
    exported = tenants.alice.export_cube("diary", tmp_path / "export")
    with MemOS.open(tmp_path / "other", embedder=HashEmbedder(64)) as other:
        with pytest.raises(AccessDenied):
            other.as_principal("bob").import_cube(exported)
        assert other.as_principal("alice").import_cube(exported).grants == {"carol": Access.READ}
        assert other.as_principal("carol").get(tenants.item).version == 2


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda m: m.grant("diary", "bob", "admin"), InvalidInput),
        (lambda m: m.grant("diary", "", "read"), InvalidInput),
        (lambda m: m.grant("diary", "alice", "read"), InvalidInput),
        (lambda m: m.revoke("diary", "bob"), NotFound),
    ],
)
def test_bad_grants_are_refused(
    tenants: Tenants, call: Callable[[MemOS], object], error: type[Exception]
) -> None:
    before = _state(tenants.operator)
    with pytest.raises(error):
        call(tenants.alice)
    assert _state(tenants.operator) == before


def test_the_operator_sees_everything_and_a_view_closes_nothing(tenants: Tenants) -> None:
    tenants.bob.create_cube("notes")
    assert [c.name for c in tenants.operator.list_cubes()] == [DIARY, "bob:notes"]
    assert tenants.operator.principal is None
    assert tenants.bob.principal == "bob"
    tenants.bob.close()
    assert tenants.operator.get(tenants.item).version == 2
    assert tenants.alice.as_principal("bob").list_cubes() == tenants.bob.list_cubes()


def test_a_grant_written_around_the_log_fails_verify(tenants: Tenants, data_dir: Path) -> None:
    info = tenants.alice.get_cube("diary")
    forged = info.model_copy(update={"grants": {"mallory": Access.WRITE}})
    with sqlite3.connect(data_dir / "memos.db") as conn:
        conn.execute("UPDATE cubes SET info = ? WHERE name = ?", (forged.model_dump_json(), DIARY))
    report = tenants.operator.verify(DIARY)
    assert not report.ok
    assert report.problem == "the cube's configuration differs from the one its log set"


# cube names are per owner ---------------------------------------------------------------------


def test_a_name_another_tenant_holds_is_as_free_as_any(tenants: Tenants) -> None:
    before = _state(tenants.operator)
    taken, free = tenants.bob.create_cube("diary"), tenants.bob.create_cube("journal")
    assert (taken.name, taken.owner, free.name, free.owner) == (
        "bob:diary", "bob", "bob:journal", "bob",
    )  # fmt: skip
    assert tenants.bob.add("bob's own diary", cube="diary").cube == "bob:diary"
    assert [e.op for e in tenants.bob.log("diary")] == [EventOp.CUBE_CREATE, EventOp.CREATE]
    assert [(e.seq, e.hash) for e in tenants.operator.log(DIARY)] == before


@pytest.mark.parametrize("name", [DIARY, "alice:no-such-cube"])
def test_no_one_creates_in_another_namespace(tenants: Tenants, name: str) -> None:
    before = _state(tenants.operator)
    with pytest.raises(AccessDenied) as refused:
        tenants.bob.create_cube(name)
    assert str(refused.value) == "'bob' creates cubes in its own namespace, not 'alice'"
    assert _state(tenants.operator) == before


def test_the_operator_names_cubes_in_any_namespace(tenants: Tenants) -> None:
    assert tenants.operator.create_cube("bob:inbox").owner == "bob"
    assert tenants.bob.add("for bob", cube="inbox").cube == "bob:inbox"
    with pytest.raises(InvalidInput):
        tenants.operator.create_cube("bob:outbox", owner="alice")


def test_a_short_name_means_a_visible_cube_of_that_name_first(tenants: Tenants) -> None:
    tenants.operator.create_cube("team", owner="alice")  # the operator's, with no namespace
    assert tenants.alice.get_cube("team").name == "team"
    assert tenants.alice.create_cube("team").name == "alice:team"
    assert tenants.alice.get_cube("team").name == "team"
    assert tenants.alice.get_cube("alice:team").name == "alice:team"
    # for bob, who cannot see the operator's "team", the name is free
    assert tenants.bob.create_cube("team").name == "bob:team"
    assert tenants.bob.get_cube("team").name == "bob:team"


@pytest.mark.parametrize("principal", ["two words", "a:b", "-dash", "x" * 65, "ünï"])
def test_a_principal_must_be_able_to_name_a_namespace(mos: MemOS, principal: str) -> None:
    with pytest.raises(InvalidInput):
        mos.as_principal(principal)
    with pytest.raises(InvalidInput):
        mos.keys.create(principal)
    assert mos.keys.list() == []
