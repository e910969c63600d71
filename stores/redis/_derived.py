"""Reads of the derived artifacts a cube keeps standing (written by commits, see
:mod:`._batch`)."""

from __future__ import annotations

from memos.core._types import DerivedEntry

from ._connection import _Connection, _storage_errors
from ._values import _parsed


class _Derived(_Connection):
    """The standing derived artifacts of each cube."""

    @_storage_errors
    def derived_entries(self, cube: str, kind: str | None = None) -> list[DerivedEntry]:
        keys = self._keys.cube(cube)
        ids, bodies = self._pipelined(
            lambda pipe: [pipe.zrange(keys.derived_order, 0, -1), pipe.hgetall(keys.derived)],
            atomic=True,
        )
        what = f"cube {cube!r}: a derived artifact"
        entries = [_parsed(DerivedEntry, bodies[i], what) for i in ids if i in bodies]
        return [entry for entry in entries if kind is None or entry.kind == kind]
