"""Reads of the item projection and the full-precision vectors (both written by commits)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from memos.core._types import MemoryItem

from ._connection import _Connection, _storage_errors
from ._layout import _CubeKeys
from ._values import _item_from, _raw, _text

if TYPE_CHECKING:
    from memos.core._store import Vector


class _Items(_Connection):
    """The items and their vectors, by id (ids are global) or within a cube."""

    def _locate(self, item_ids: Sequence[str]) -> list[tuple[str, _CubeKeys]]:
        """The items that exist, with the keys of their cubes."""
        unique = list(dict.fromkeys(item_ids))
        cubes = self._each(unique, lambda pipe, item_id: pipe.get(self._keys.item_cube(item_id)))
        return [
            (item_id, self._keys.cube(_text(cube)))
            for item_id, cube in zip(unique, cubes, strict=True)
            if cube is not None
        ]

    def _bodies(self, located: Sequence[tuple[str, _CubeKeys]]) -> list[MemoryItem]:
        bodies = self._each(located, lambda pipe, found: pipe.hget(found[1].item(found[0]), "body"))
        return [
            _item_from(item_id, body)
            for (item_id, _), body in zip(located, bodies, strict=True)
            if body is not None
        ]

    @_storage_errors
    def get_item(self, item_id: str) -> MemoryItem | None:
        return self.get_items([item_id]).get(item_id)

    @_storage_errors
    def get_items(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, MemoryItem]:
        if cube is None:
            located = self._locate(item_ids)
        else:  # the keys are known: one round trip, no lookup of each item's cube
            located = [(item_id, self._keys.cube(cube)) for item_id in dict.fromkeys(item_ids)]
        return {item.id: item for item in self._bodies(located)}

    def iter_items(self, cube: str) -> Iterator[MemoryItem]:
        return iter(self._cube_items(cube))

    @_storage_errors
    def _cube_items(self, cube: str) -> list[MemoryItem]:
        keys = self._keys.cube(cube)
        ids = [_text(item_id) for item_id in self._redis.zrange(keys.items, 0, -1)]
        return self._bodies([(item_id, keys) for item_id in ids])

    @_storage_errors
    def get_vectors(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, Vector]:
        if cube is not None:  # one MGET of keys in one slot, instead of a lookup per item
            unique = list(dict.fromkeys(item_ids))
            keys = self._keys.cube(cube)
            raws = self._redis.mget([keys.vector(i) for i in unique]) if unique else []
            return {
                item_id: np.frombuffer(_raw(raw), dtype=np.float32)
                for item_id, raw in zip(unique, raws, strict=True)
                if raw is not None
            }
        located = self._locate(item_ids)
        data = self._each(located, lambda pipe, found: pipe.get(found[1].vector(found[0])))
        return {
            item_id: np.frombuffer(_raw(raw), dtype=np.float32)
            for (item_id, _), raw in zip(located, data, strict=True)
            if raw is not None
        }
