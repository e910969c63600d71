"""The writes of one commit (or cube creation, or import), planned as one MULTI/EXEC.

A batch reads what the shared rules of :mod:`memos.core._commit_rules` check (through its
:class:`._view._View`), runs them in Python, seals the events onto the chain and queues every
write (log, payloads, items, indexes, postings, derived artifacts, the new heads) for one
transaction.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from memos.core import _commit_rules as rules
from memos.core._derived import REPLACE_OPS, invalidations, slot_key
from memos.core._store import Change, CubeImport
from memos.core._types import CubeInfo, DerivedEntry, Event, ItemStatus, MemoryItem
from memos.errors import Conflict, NotFound

from . import _keywords
from ._connection import Command
from ._layout import _active_member, _filter_keys, _Keys
from ._values import _event_fields
from ._view import _View

if TYPE_CHECKING:
    from memos.core._store import Vector


class _Batch:
    """The writes of one transaction, planned against a :class:`_View` they keep current."""

    def __init__(self, view: _View, keys: _Keys) -> None:
        self.view, self._keys = view, keys
        self._commands: list[Command] = []
        self._heads: dict[str, tuple[int, str]] = {}

    def _add(self, *command: str | bytes | int | float) -> None:
        self._commands.append(command)

    def finish(self) -> list[Command]:
        """Every queued write, then the new head of each cube the batch appended to."""
        for cube, (seq, digest) in self._heads.items():
            self._add("HSET", self._keys.cube(cube).head, "seq", seq, "hash", digest)
        return self._commands

    # commits

    def prefetch(self, changes: Sequence[Change]) -> None:
        """Read what the batch's checks need in a few round trips, not one per change."""
        self.view.load_cubes(change.cube for change in changes)
        sources = [s.item_id for c in changes if c.derived is not None for s in c.derived.sources]
        item_ids = [change.item_id for change in changes if change.item_id is not None]
        erased = [item_id for change in changes for item_id in change.erased]
        self.view.load_items([*item_ids, *sources, *erased])

    def commit(self, changes: Sequence[Change]) -> list[Event]:
        events: list[Event] = []
        pending = deque(changes)
        while pending:
            change = pending.popleft()
            events.append(self._apply(change))
            if change.after is not None:
                # the artifacts built from an older version go right after the change
                pending.extendleft(reversed(self._invalidated(change)))
        return events

    def _apply(self, change: Change) -> Event:
        seq, prev_hash = self.view.head(change.cube)
        if change.item_id is not None and change.expected_version is not None:
            current = self.view.item(change.item_id)
            rules.check_version(change, None if current is None else current.version)
        if change.cube_info is not None:
            rules.check_cube_successor(change, self.view.info(change.cube))
        self._check_new_derived(change)
        self._check_erasure(change)
        event = change.sealed(seq, prev_hash)
        self.append_event(event)
        if change.after is not None:
            self.put_item(change.after, row=event.seq)
        if change.vector is not None and change.item_id is not None:
            cube = change.cube if change.after is None else change.after.cube
            self.put_vector(cube, change.item_id, change.vector)
        if change.cube_info is not None:
            self._add("SET", self._keys.cube(change.cube).info, change.cube_info.model_dump_json())
            self.view.set_info(change.cube_info)
        self._apply_derived(change, row=event.seq)
        if change.erased:
            self._erase(change.cube, change.erased)
        return event

    def _check_erasure(self, change: Change) -> None:
        if not change.erased:
            return
        self.view.load_items(change.erased)
        found = {item_id: self.view.item(item_id) for item_id in change.erased}
        cubes = {item_id: None if item is None else item.cube for item_id, item in found.items()}
        built = [i for i in change.erased if self.view.derived_by(change.cube, i)]
        rules.check_erasure(change, cubes, built)

    def _erase(self, cube: str, item_ids: Sequence[str]) -> None:
        """Remove the items with everything kept beside them, and their events' payloads."""
        keys = self._keys.cube(cube)
        seqs = self.view.event_seqs(cube, item_ids)
        pairs = self.view.pairs_with(cube, set(item_ids))
        for item_id in item_ids:
            item = self.view.item(item_id)
            assert item is not None
            self._index(item, add=False)
            if seqs[item_id]:
                self._add("HDEL", keys.payloads, *seqs[item_id])
            for key in (keys.item(item_id), keys.vector(item_id), keys.derived_by(item_id)):
                self._add("DEL", key)
            self._add("DEL", self._keys.item_cube(item_id), self._keys.access(item_id))
            self._add("ZREM", keys.items, item_id)
            self._add("SREM", keys.accessed, item_id)
            self.view.items[item_id] = None
        if pairs:
            self._add("HDEL", keys.co_access, *pairs)

    def _check_new_derived(self, change: Change) -> None:
        entry = change.derived
        if entry is None or change.op in REPLACE_OPS:
            return
        self.view.load_items(source.item_id for source in entry.sources)
        rules.check_new_derived(
            change,
            id_taken=self.view.derived_cube(entry.id) is not None,
            sources={s.item_id: self.view.item(s.item_id) for s in entry.sources},
            standing=[] if slot_key(entry) is None else self.view.standing(entry.cube),
        )

    def _apply_derived(self, change: Change, *, row: int) -> None:
        if change.derived is not None and change.op in REPLACE_OPS:
            self.replace_derived(change.derived)
        elif change.derived is not None:
            self.insert_derived(change.derived, row=row)
        if change.dropped is not None:
            self.drop_derived(change.cube, change.dropped)

    def _invalidated(self, change: Change) -> list[Change]:
        item = change.after
        assert item is not None
        standing = [
            self.view.derived(item.cube, i) for i in self.view.derived_by(item.cube, item.id)
        ]
        ordered = sorted((found for found in standing if found is not None), key=lambda f: f[1])
        return invalidations(
            [entry for entry, _ in ordered], item, actor=change.actor, ts=change.ts
        )

    # cubes and events

    def put_cube(self, info: CubeInfo) -> None:
        self._add("SET", self._keys.cube(info.name).info, info.model_dump_json())
        self._add("SADD", self._keys.cubes, info.name)
        self.view.set_info(info)

    def append_event(self, event: Event) -> None:
        keys = self._keys.cube(event.cube)
        self._add("XADD", keys.log, f"{event.seq}-0", *_event_fields(event))
        if event.payload is not None:
            body = json.dumps(event.payload, ensure_ascii=False)
            self._add("HSET", keys.payloads, event.seq, body)
        if event.item_id is not None:
            self._add("ZADD", keys.item_events(event.item_id), event.seq, event.seq)
        self._heads[event.cube] = self.view.heads[event.cube] = (event.seq, event.hash)

    # items

    def put_item(self, item: MemoryItem, *, row: int) -> None:
        """Write the item's new state: the old one leaves the indexes and the new one enters
        them (only active items are indexed). ``row`` orders the cube's items by last write."""
        old = self.view.item(item.id)
        if old is not None:
            self._index(old, add=False)
            if old.cube != item.cube:
                self._move_out(old, item.cube)
        keys = self._keys.cube(item.cube)
        self._add(
            "HSET", keys.item(item.id), "body", item.model_dump_json(), "version", item.version
        )
        self._add("ZADD", keys.items, row, item.id)
        self._add("SET", self._keys.item_cube(item.id), item.cube)
        self._index(item, add=True)
        self.view.items[item.id] = item

    def _move_out(self, old: MemoryItem, cube: str) -> None:
        # an id written into another cube moves there with its vector, as a row would
        before, after = self._keys.cube(old.cube), self._keys.cube(cube)
        self._add("DEL", before.item(old.id))
        self._add("ZREM", before.items, old.id)
        self._add("COPY", before.vector(old.id), after.vector(old.id), "REPLACE")
        self._add("DEL", before.vector(old.id))

    def _index(self, item: MemoryItem, *, add: bool) -> None:
        if item.status != ItemStatus.ACTIVE:
            return
        keys = self._keys.cube(item.cube)
        if add:
            self._add("ZADD", keys.active, 0, _active_member(item))
        else:
            self._add("ZREM", keys.active, _active_member(item))
        for key in _filter_keys(keys, item):
            self._add("SADD" if add else "SREM", key, item.id)
        counts, length = _keywords.term_counts(item.text)
        for term, count in counts.items():
            if add:
                self._add("HSET", keys.terms(term), item.id, count)
            else:
                self._add("HDEL", keys.terms(term), item.id)
        if add:
            self._add("HSET", keys.lengths, item.id, length)
        else:
            self._add("HDEL", keys.lengths, item.id)
        self._add("INCRBY", keys.total_length, length if add else -length)

    def put_vector(self, cube: str, item_id: str, vector: Vector) -> None:
        data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        self._add("SET", self._keys.cube(cube).vector(item_id), data)

    # derived artifacts

    def insert_derived(self, entry: DerivedEntry, *, row: int) -> None:
        keys = self._keys.cube(entry.cube)
        self._add("HSET", keys.derived, entry.id, entry.model_dump_json())
        self._add("ZADD", keys.derived_order, row, entry.id)
        for source in entry.sources:
            self._add("SADD", keys.derived_by(source.item_id), entry.id)
            self.view.derived_by(entry.cube, source.item_id).add(entry.id)
        self._add("SET", self._keys.derived_cube(entry.id), entry.cube)
        self.view.set_derived(entry.cube, entry.id, (entry, float(row)))

    def replace_derived(self, entry: DerivedEntry) -> None:
        found = self.view.derived(entry.cube, entry.id)
        if found is None or found[0].kind != entry.kind:
            raise NotFound(f"cube {entry.cube!r} has no derived artifact {entry.id!r}")
        self._add("HSET", self._keys.cube(entry.cube).derived, entry.id, entry.model_dump_json())
        self.view.set_derived(entry.cube, entry.id, (entry, found[1]))

    def drop_derived(self, cube: str, derived_id: str) -> None:
        found = self.view.derived(cube, derived_id)
        if found is None:
            raise NotFound(f"cube {cube!r} has no derived artifact {derived_id!r}")
        keys = self._keys.cube(cube)
        self._add("HDEL", keys.derived, derived_id)
        self._add("ZREM", keys.derived_order, derived_id)
        for source in found[0].sources:
            self._add("SREM", keys.derived_by(source.item_id), derived_id)
            self.view.derived_by(cube, source.item_id).discard(derived_id)
        self._add("DEL", self._keys.derived_cube(derived_id))
        self.view.set_derived(cube, derived_id, None)


def _check_import_ids(view: _View, data: CubeImport) -> None:
    """Ids are global: an import whose item or derived artifact id is taken would write into
    another cube, so it is refused (the message names no other cube). The lookups are watched,
    so a write that takes an id meanwhile makes the transaction start over."""
    view.load_items(item.id for item in data.items)
    for item in data.items:
        if view.items[item.id] is not None:
            raise Conflict(f"the id {item.id} of the import is taken", id=item.id)
    for entry in data.derived:
        if view.derived_cube(entry.id) is not None:
            raise Conflict(f"the id {entry.id} of the import is taken", id=entry.id)
