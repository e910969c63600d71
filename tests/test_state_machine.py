"""MemOS against a plain in-memory model, driven by hypothesis through random histories.

The model is a dict of item id -> the list of versions of ``(text, status, tags)`` and the list
of events (one ``(item id, content)`` per mutation). Every step, the real MemOS (SQLite in a
temp dir, and again on the Redis store; the deterministic ``HashEmbedder``) must hold the same
items, a verifying log of the same length, answer a search with exactly the active items, and
say the same after reopening.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from _redis import drop_redis_store, fresh_redis_url
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from memos import HashEmbedder, ItemStatus, MemoryItem, MemOS, open_store
from memos.errors import Conflict, InvalidInput, VersionConflict, VersionNotFound

CUBE = "model"
ACTIVE, DELETED = ItemStatus.ACTIVE.value, ItemStatus.DELETED.value

Content = tuple[str, str, tuple[str, ...]]  # text, status, tags

texts = st.lists(
    st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "Ünï"]), min_size=1, max_size=3
).map(" ".join)
tag_sets = st.lists(st.sampled_from(["red", "green", "blue"]), max_size=2, unique=True).map(tuple)
# how a caller passes expected_version: not at all, the current version, or a stale one
expectations = st.sampled_from(["none", "current", "stale"])


def content(item: MemoryItem) -> Content:
    return item.text, item.status.value, item.tags


class MemOSMachine(RuleBasedStateMachine):
    items = Bundle("items")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="memos-sm-"))
        self.data_dir = self.tmp / "data"
        self.mos = self.open()
        self.mos.create_cube(CUBE, owner="alice")
        self.versions: dict[str, list[Content]] = {}
        self.log: list[tuple[str, Content]] = []  # the events after cube_create, in order

    def open(self) -> MemOS:
        """The MemOS under test, opened again on the same data by ``survives_reopen``."""
        return MemOS.open(self.data_dir, embedder=HashEmbedder(64))

    def teardown(self) -> None:
        self.mos.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # model helpers ------------------------------------------------------------------------

    def current(self, item_id: str) -> Content:
        return self.versions[item_id][-1]

    def record(self, item_id: str, new: Content) -> None:
        self.versions.setdefault(item_id, []).append(new)
        self.log.append((item_id, new))

    def head_seq(self) -> int:
        return 1 + len(self.log)

    def state_at(self, seq: int) -> dict[str, Content]:
        state: dict[str, Content] = {}
        for item_id, new in self.log[: seq - 1]:
            state[item_id] = new
        return state

    def active_ids(self) -> set[str]:
        return {i for i, versions in self.versions.items() if versions[-1][1] == ACTIVE}

    def expected_version(self, item_id: str, how: str, data: st.DataObject) -> int | None:
        version = len(self.versions[item_id])
        if how == "none":
            return None
        if how == "current":
            return version
        stale = [v for v in range(version + 3) if v != version]
        return data.draw(st.sampled_from(stale), "stale")

    def check_returned(self, item: MemoryItem) -> None:
        assert content(item) == self.current(item.id)
        assert item.version == len(self.versions[item.id])

    # rules --------------------------------------------------------------------------------

    @rule(target=items, text=texts, tags=tag_sets)
    def add(self, text: str, tags: tuple[str, ...]) -> str:
        item = self.mos.add(text, cube=CUBE, user="alice", tags=list(tags))
        assert not isinstance(item, list)
        self.record(item.id, (text, ACTIVE, tags))
        self.check_returned(item)
        return item.id

    @rule(
        item_id=items,
        text=texts,
        tags=st.none() | tag_sets,
        how=expectations,
        data=st.data(),
    )
    def update(
        self,
        item_id: str,
        text: str,
        tags: tuple[str, ...] | None,
        how: str,
        data: st.DataObject,
    ) -> None:
        expected = self.expected_version(item_id, how, data)
        _, status, old_tags = self.current(item_id)
        if how == "stale" or status == DELETED:
            with pytest.raises(Conflict) as caught:
                self.mos.update(item_id, text, tags=tags, user="alice", expected_version=expected)
            assert isinstance(caught.value, VersionConflict) == (how == "stale")
            return
        item = self.mos.update(item_id, text, tags=tags, user="alice", expected_version=expected)
        self.record(item_id, (text, ACTIVE, old_tags if tags is None else tags))
        self.check_returned(item)

    @rule(item_id=items, how=expectations, data=st.data())
    def delete(self, item_id: str, how: str, data: st.DataObject) -> None:
        expected = self.expected_version(item_id, how, data)
        text, status, tags = self.current(item_id)
        if how == "stale" or status == DELETED:
            with pytest.raises(Conflict) as caught:
                self.mos.delete(item_id, user="alice", expected_version=expected)
            assert isinstance(caught.value, VersionConflict) == (how == "stale")
            return
        item = self.mos.delete(item_id, user="alice", expected_version=expected, reason="model")
        self.record(item_id, (text, DELETED, tags))
        self.check_returned(item)

    @rule(item_id=items, how=expectations, data=st.data())
    def rollback(self, item_id: str, how: str, data: st.DataObject) -> None:
        count = len(self.versions[item_id])
        to_version = data.draw(st.integers(1, count + 1), "to_version")
        expected = self.expected_version(item_id, how, data)
        error = (
            VersionNotFound if to_version > count else VersionConflict if how == "stale" else None
        )
        if error is not None:
            with pytest.raises(error):
                self.mos.rollback(
                    item_id, to_version=to_version, user="alice", expected_version=expected
                )
            return
        item = self.mos.rollback(
            item_id, to_version=to_version, user="alice", expected_version=expected
        )
        self.record(item_id, self.versions[item_id][to_version - 1])
        self.check_returned(item)

    @rule(data=st.data())
    def rollback_cube(self, data: st.DataObject) -> None:
        head = self.head_seq()
        to_seq = data.draw(st.integers(1, head + 1), "to_seq")
        if to_seq > head:
            with pytest.raises(InvalidInput):
                self.mos.rollback_cube(CUBE, to_seq=to_seq, user="alice")
            return
        past = self.state_at(to_seq)
        wanted: dict[str, Content] = {}
        for item_id in self.versions:
            now = self.current(item_id)
            target = past.get(item_id, (now[0], DELETED, now[2]))
            if target != now:
                wanted[item_id] = target

        changed = self.mos.rollback_cube(CUBE, to_seq=to_seq, user="alice", reason="model")

        assert {i.id: content(i) for i in changed} == wanted
        # the order of one rollback's events is the store's; the model takes it from the log
        new_events = self.mos.log(CUBE, after_seq=head)
        assert len(new_events) == len(wanted)
        assert {e.item_id for e in new_events} == set(wanted)
        for event in new_events:
            assert event.item_id is not None
            self.record(event.item_id, wanted[event.item_id])
        for item in changed:
            self.check_returned(item)

    @rule(query=texts)
    def search(self, query: str) -> None:
        self.check_search(self.mos, query)

    @precondition(lambda self: len(self.versions) > 0)
    @rule(item_id=consumes(items))
    def forget_handle(self, item_id: str) -> None:
        """Drop an id from the bundle so later rules favour newer items (the item stays)."""
        assert item_id in self.versions

    # invariants ---------------------------------------------------------------------------

    def check_search(self, mos: MemOS, query: str) -> dict[str, float]:
        hits = mos.search(query, cube=CUBE, k=len(self.versions) + 1)
        ids = [h.item.id for h in hits]
        assert len(ids) == len(set(ids))
        assert set(ids) == self.active_ids()
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        for hit in hits:
            self.check_returned(hit.item)
        return {h.item.id: round(h.score, 5) for h in hits}

    def check_state(self, mos: MemOS) -> None:
        stored = {i.id: i for i in mos.store.iter_items(CUBE)}
        assert set(stored) == set(self.versions)
        for item_id, versions in self.versions.items():
            item = mos.get(item_id)
            assert item == stored[item_id]
            self.check_returned(item)
            history = mos.history(item_id)
            assert [h.version for h in history] == list(range(1, len(versions) + 1))
            assert [content(h.item) for h in history] == versions
        log = mos.log(CUBE)
        assert len(log) == self.head_seq()
        assert [(e.item_id, content(e.after)) for e in log[1:] if e.after] == self.log
        report = mos.verify(CUBE)
        assert report.ok, report
        assert report.head_seq == self.head_seq()

    @invariant()
    def matches_model(self) -> None:
        self.check_state(self.mos)
        self.check_search(self.mos, "alpha beta")

    @invariant()
    def survives_reopen(self) -> None:
        before = self.check_search(self.mos, "gamma x")
        self.mos.close()
        self.mos = self.open()
        self.check_state(self.mos)
        assert self.check_search(self.mos, "gamma x") == before


class RedisMemOSMachine(MemOSMachine):
    """The same histories on the Redis store (a fresh key prefix per history)."""

    def __init__(self) -> None:
        self.url = fresh_redis_url()
        super().__init__()

    def open(self) -> MemOS:
        return MemOS(open_store(self.url), embedder=HashEmbedder(64))

    def teardown(self) -> None:
        super().teardown()
        drop_redis_store(self.url)


MemOSMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
TestMemOSStateMachine = MemOSMachine.TestCase
RedisMemOSMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None
)
TestRedisMemOSStateMachine = RedisMemOSMachine.TestCase
