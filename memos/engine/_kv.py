"""``mos.kv``: the activation tier's operations, declared once (see
:mod:`memos.engine._operations`); the work is :class:`memos.activation.KVMemory`'s."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from memos.activation import KVEntry
from memos.core._types import Event, MemoryItem
from memos.engine._operations import Namespace, operation

if TYPE_CHECKING:
    from memos.activation import KVMemory
    from memos.engine._handle import Handle
    from memos.llm import ResidentPrefix

_KV = "kv"


class KV(Namespace):
    """KV caches of memory blocks: ``build``, ``list``, ``get``, ``drop``."""

    _handle: Handle

    @property
    def _tier(self) -> KVMemory:
        """The engine's KV catalog, as this handle's principal sees it."""
        handle = self._handle
        return handle._engine.kv().scoped(handle._scope.cube, handle._scope.actor)

    @operation("POST", "/v1/cubes/{cube}/kv", status=201, tag=_KV)
    def build(
        self,
        cube: str,
        item_ids: Sequence[str] | None = None,
        *,
        query: str | None = None,
        k: int = 8,
        dtype: str | None = None,
        user: str | None = None,
        reason: str | None = None,
    ) -> KVEntry:
        """Compute and store the KV cache of a memory block: the given items in that order,
        or the ``k`` best for ``query`` in rank order. ``dtype`` (``fp32``, ``bf16`` or
        ``int8``) defaults to the cube's. One ``kv_build`` event."""
        return self._tier.build(
            cube, item_ids, query=query, k=k, dtype=dtype, user=user, reason=reason
        )

    @operation("GET", "/v1/cubes/{cube}/kv", tag=_KV)
    def list(self, cube: str) -> list[KVEntry]:
        """The cube's stored KV caches, oldest first."""
        return self._tier.list(cube)

    @operation("GET", "/v1/cubes/{cube}/kv/{entry_id}", tag=_KV)
    def get(self, cube: str, entry_id: str) -> KVEntry:
        """The cube's stored KV cache ``entry_id``."""
        return self._tier.get(cube, entry_id)

    @operation("DELETE", "/v1/cubes/{cube}/kv/{entry_id}", tag=_KV)
    def drop(
        self, cube: str, entry_id: str, *, user: str | None = None, reason: str | None = None
    ) -> Event:
        """Retire a KV cache (one ``kv_drop`` event); chat no longer uses it."""
        return self._tier.drop(cube, entry_id, user=user, reason=reason)


class EmbeddedKV(KV):
    """``mos.kv`` of an embedded handle, which also holds the caches it loads."""

    def covering(self, cube: str, items: Sequence[MemoryItem]) -> KVEntry | None:
        """The smallest usable stored block holding every one of ``items`` at its current
        version, made by the current model with the current templates."""
        return self._tier.covering(cube, items)

    def load(self, entry: KVEntry) -> ResidentPrefix:
        """The entry's cache, resident in RAM (checked against the loaded model)."""
        return self._tier.load(entry)

    def resident(self, cube: str | None = None) -> dict[str, int]:
        """Blob digest -> bytes of the caches held in RAM now (those of ``cube``)."""
        return self._tier.resident(cube)
