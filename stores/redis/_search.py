"""The search indexes over a cube's active items: the filter sets (user, session, tag, time),
the keyword postings ranked by bm25 (:mod:`._keywords`), and their check against the items."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from redis.client import Pipeline
from redis.commands.core import Script

from memos.core._types import ItemFilter, MemoryItem
from memos.errors import IntegrityError

from . import _keywords
from ._connection import _storage_errors
from ._items import _Items
from ._layout import _active_member, _CubeKeys, _filter_keys
from ._values import _loose, _raw, _text, _time_text


def _wanted_sets(keys: _CubeKeys, flt: ItemFilter) -> list[str]:
    """The index sets an item must be in to pass ``flt``."""
    found = [keys.tag(tag) for tag in flt.tags]
    if flt.user is not None:
        found.append(keys.user(flt.user))
    if flt.session is not None:
        found.append(keys.session(flt.session))
    return found


def _lex_range(flt: ItemFilter) -> tuple[str, str]:
    """The ZRANGEBYLEX bounds of ``since <= occurred_at < until``."""
    low = "-" if flt.since is None else f"[{_time_text(flt.since)}"
    high = "+" if flt.until is None else f"({_time_text(flt.until)}"
    return low, high


def _where_matches(item: MemoryItem, where: dict[str, Any]) -> bool:
    # SQLite's `json_extract(...) IS ?`: a missing key is null, true is 1, 1 is 1.0, and a
    # string equals only the same string; Python's == on the decoded values agrees.
    return all(item.metadata.get(key) == expected for key, expected in where.items())


def _count(value: object) -> int | None:
    """A count the keyword index holds, or ``None`` when what is stored is not one."""
    text = _loose(value)
    return int(text) if text.isascii() and text.isdigit() else None


class _Search(_Items):
    """Filtering and keyword search over the indexes the commits keep."""

    @_storage_errors
    def filter_item_ids(self, cube: str, flt: ItemFilter) -> list[str]:
        if len(set(flt.tags)) != len(flt.tags):
            # as in SQLite, where an item must match the tags as many times as they are named
            return []
        keys = self._keys.cube(cube)
        sets = _wanted_sets(keys, flt)

        def queue(pipe: Pipeline) -> None:
            pipe.zrangebylex(keys.active, *_lex_range(flt))
            if sets:
                pipe.sinter(sets)

        members, *inside = self._pipelined(queue, atomic=True)
        ids = [_text(member).partition(" ")[2] for member in members]
        if sets:
            wanted = {_text(member) for member in inside[0]}
            ids = [item_id for item_id in ids if item_id in wanted]
        if flt.where:
            items = self._bodies([(item_id, keys) for item_id in ids])
            ids = [item.id for item in items if _where_matches(item, flt.where)]
        return ids

    @_storage_errors
    def keyword_search(
        self, cube: str, query: str, k: int, flt: ItemFilter
    ) -> list[tuple[str, float]]:
        terms = _keywords.query_terms(query)
        if not terms or k <= 0:
            return []
        keys = self._keys.cube(cube)
        allowed = None if flt.is_empty else self.filter_item_ids(cube, flt)
        unique, args = _keywords.bm25_script_args(terms, k, allowed)
        # one script reads the postings and lengths and ranks: one round trip, k replies
        names = [keys.lengths, keys.total_length, keys.items, *map(keys.terms, unique)]
        reply = self._bm25(keys=names, args=args)
        pairs = zip(reply[::2], reply[1::2], strict=True)
        return [(_text(doc), float(score)) for doc, score in pairs]

    @_storage_errors
    def index_mismatches(self, cube: str, active: Sequence[MemoryItem]) -> list[str]:
        keys = self._keys.cube(cube)
        # one pass over the keyspace finds the index keys of values no item has too
        names = sorted(set(map(_raw, self._redis.scan_iter(f"{keys.base}:*", count=1000))))
        indexed, lengths, total = self._keyword_index(keys, names)
        expected = {item.id: _keywords.term_counts(item.text) for item in active}
        differing = {
            item_id
            for item_id in indexed.keys() | lengths.keys() | expected.keys()
            if item_id not in expected
            or indexed.get(item_id, {}) != dict(expected[item_id][0])
            or lengths.get(item_id) != expected[item_id][1]
        }
        differing |= self._filter_mismatches(keys, names, active)
        if differing:
            return sorted(differing)
        if total != sum(length for _, length in expected.values()):
            raise IntegrityError(
                f"the keyword index of cube {cube!r} counts {total} terms in all, not the sum "
                "of its items' lengths",
                cube=cube,
            )
        return []

    def _filter_mismatches(
        self, keys: _CubeKeys, names: Sequence[bytes], active: Sequence[MemoryItem]
    ) -> set[str]:
        """The ids the filter indexes hold otherwise than ``active`` gives: the time-ordered
        set of active items, and the sets by user, session and tag among the cube's key
        ``names``."""
        members = {_loose(m) for m in self._redis.zrange(keys.active, 0, -1)}
        wanted = {_active_member(item) for item in active}
        differing = {member.partition(" ")[2] for member in members ^ wanted}
        expected: dict[str, set[str]] = {}
        for item in active:
            for name in _filter_keys(keys, item):
                expected.setdefault(name, set()).add(item.id)
        kinds = tuple(kind.encode() for kind in (keys.user(""), keys.session(""), keys.tag("")))
        sets = [_loose(name) for name in names if name.startswith(kinds)]
        held = self._each(sets, lambda pipe, name: pipe.smembers(name))
        found = {name: {_loose(m) for m in ids} for name, ids in zip(sets, held, strict=True)}
        for name in found.keys() | expected.keys():
            differing |= found.get(name, set()) ^ expected.get(name, set())
        return differing

    def _keyword_index(
        self, keys: _CubeKeys, names: Sequence[bytes]
    ) -> tuple[dict[str, dict[str, int | None]], dict[str, int | None], int | None]:
        """Each item's postings (term -> frequency), each item's length and the total length,
        as the index holds them (a value that is not a count reads as ``None``). The postings
        are those among the cube's key ``names``, so a term no item's text gives is seen too."""
        start = keys.terms("").encode()
        terms = [name for name in names if name.startswith(start)]
        postings = self._each(terms, lambda pipe, name: pipe.hgetall(name))
        indexed: dict[str, dict[str, int | None]] = {}
        for name, entries in zip(terms, postings, strict=True):
            term = _loose(name[len(start) :])
            for item_id, count in entries.items():
                indexed.setdefault(_loose(item_id), {})[term] = _count(count)
        lengths, total = self._pipelined(
            lambda pipe: [pipe.hgetall(keys.lengths), pipe.get(keys.total_length)], atomic=True
        )
        by_item = {_loose(item_id): _count(length) for item_id, length in lengths.items()}
        return indexed, by_item, 0 if total is None else _count(total)

    @functools.cached_property
    def _bm25(self) -> Script:
        # sent by digest; the text goes once to a Redis that does not know it yet
        return self._redis.register_script(_keywords.BM25_SCRIPT)
