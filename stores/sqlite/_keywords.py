"""The keyword index over a cube's active items: bm25 search and the check that the index
matches the items. The tables themselves (one FTS5 table per cube, why, and the safe queries)
are :mod:`memos.stores._fts5`'s, which the Redis store's keyword index follows too."""

from __future__ import annotations

from collections.abc import Sequence

from memos.core._types import ItemFilter, MemoryItem
from memos.errors import IntegrityError

from .. import _fts5  # relative: this package is installed as memos.stores
from ._items import filter_sql
from ._log import EventLog


class KeywordIndex(EventLog):
    """Keyword search and its index check; over the event log, whose cubes it searches."""

    def keyword_search(
        self, cube: str, query: str, k: int, flt: ItemFilter
    ) -> list[tuple[str, float]]:
        match = _fts5.match_query(query)
        if match is None or k <= 0 or self.get_cube(cube) is None:
            return []
        table = _fts5.table_name(cube)
        conditions, params = filter_sql(cube, flt)
        if flt.is_empty:
            # The table holds exactly the cube's active items, so the best k are found in it
            # alone (2-3x faster than joining every match), then named; the join re-checks them.
            sql = (
                f"WITH best AS (SELECT rowid AS row_, bm25({table}) AS rank_ FROM {table}"
                f" WHERE {table} MATCH ? ORDER BY rank_, rowid LIMIT ?)"
                " SELECT items.id, best.rank_ FROM best JOIN items ON items.rowid = best.row_"
                f" WHERE {conditions} ORDER BY best.rank_, best.row_"
            )
            rows = self._read(sql, [match, k, *params])
        else:
            # the filters sit in the same WHERE as the match, so LIMIT counts only matching items
            sql = (
                f"SELECT items.id, bm25({table}) AS rank_ FROM {table}"
                f" JOIN items ON items.rowid = {table}.rowid"
                f" WHERE {table} MATCH ? AND {conditions} ORDER BY rank_, {table}.rowid LIMIT ?"
            )
            rows = self._read(sql, [match, *params, k])
        # bm25() is lower-is-better; negated, higher is better like every other score.
        # Ties go to the row written first (an order an export and import keep).
        return [(item_id, -float(score)) for item_id, score in rows]

    def index_mismatches(self, cube: str, active: Sequence[MemoryItem]) -> list[str]:
        # the filter columns (status, user, session, time, tags) are the item rows' own, which
        # iter_items reads back for verify to compare: only the keyword table is apart
        texts = {item.id: item.text for item in active}
        with self._lock:
            indexed, orphans = _fts5.indexed_texts(self._conn, cube)
            differing = sorted(
                item_id
                for item_id in indexed.keys() | texts.keys()
                if indexed.get(item_id) != texts.get(item_id)
            )
            if differing:
                return differing
            if orphans:
                raise IntegrityError(
                    f"the keyword table of cube {cube!r} has {orphans} rows of no item", cube=cube
                )
            problem = _fts5.table_problem(self._conn, cube)
        if problem is not None:
            raise IntegrityError(problem, cube=cube)
        return []
