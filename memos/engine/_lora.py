"""``mos.lora``: the parametric tier's operations, declared once (see
:mod:`memos.engine._operations`); the work is :class:`memos.parametric.LoraMemory`'s."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.core._archive import ADAPTER_EXPORT
from memos.core._types import CubeInfo, Event
from memos.engine._operations import Namespace, operation
from memos.parametric import AdapterEntry
from memos.parametric._manifest import DEFAULT_DENSITY

if TYPE_CHECKING:
    from memos.engine._handle import Handle
    from memos.parametric import LoraMemory

_LORA = "lora"
_ADAPTER = "/v1/cubes/{cube}/adapters/{name}"
TrainProgress = Callable[[int, int, float], None]


class Lora(Namespace):
    """LoRA adapters trained on a cube's memories: ``consolidate``, ``list``, ``show``,
    ``attach``, ``rollback``, ``retrain``, ``export``, ``import_adapter``, ``delete``."""

    _handle: Handle

    @property
    def _tier(self) -> LoraMemory:
        """The engine's adapter catalog, as this handle's principal sees it."""
        handle = self._handle
        return handle._engine.lora().scoped(handle._scope.cube, handle._scope.actor)

    @operation("GET", "/v1/cubes/{cube}/adapters", tag=_LORA)
    def list(self, cube: str, name: str | None = None) -> list[AdapterEntry]:
        """The cube's adapter versions (of ``name`` only, when given), oldest first."""
        return self._tier.list(cube, name)

    @operation("GET", _ADAPTER, tag=_LORA)
    def show(self, cube: str, name: str, version: int | None = None) -> AdapterEntry:
        """Version ``version`` of adapter ``name`` (its latest by default)."""
        return self._tier.show(cube, name, version)

    @operation("POST", "/v1/cubes/{cube}/adapters", status=201, tag=_LORA, local=["progress"])
    def consolidate(
        self,
        cube: str,
        item_ids: Sequence[str] | None = None,
        *,
        name: str,
        query: str | None = None,
        k: int = 20,
        recipe: Mapping[str, Any] | None = None,
        density: float | None = DEFAULT_DENSITY,
        user: str | None = None,
        reason: str | None = None,
        progress: TrainProgress | None = None,
    ) -> AdapterEntry:
        """Train a new version of adapter ``name`` on memories (given ids, or the ``k`` best
        for ``query``), stored ComPEFT-compressed at ``density`` when that keeps its recall
        (``density=None``: fp32). ``recipe`` (a ``TrainingRecipe`` or its fields) sets the
        training; ``progress(step, steps, loss)`` is called embedded only. One
        ``adapter_build`` event."""
        return self._tier.consolidate(
            cube, item_ids, name=name, query=query, k=k, recipe=recipe, density=density,
            user=user, reason=reason, progress=progress,
        )  # fmt: skip

    @operation(
        "POST", f"{_ADAPTER}/retrain", status=201, tag=_LORA,
        local=["progress"],
    )  # fmt: skip
    def retrain(
        self,
        cube: str,
        name: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        progress: TrainProgress | None = None,
    ) -> AdapterEntry:
        """A new version trained on the current versions of the latest one's sources that are
        still active: a deleted memory is left out, a changed one is learned as it is now."""
        return self._tier.retrain(cube, name, user=user, reason=reason, progress=progress)

    @operation("POST", f"{_ADAPTER}/rollback", status=201, tag=_LORA)
    def rollback(
        self,
        cube: str,
        name: str,
        *,
        to_version: int,
        user: str | None = None,
        reason: str | None = None,
    ) -> AdapterEntry:
        """A new version with version ``to_version``'s weights (history only moves forward);
        stale if any of its sources changed since."""
        return self._tier.rollback(cube, name, to_version=to_version, user=user, reason=reason)

    @operation("POST", "/v1/cubes/{cube}/adapters/attach", tag=_LORA)
    def attach(
        self, cube: str, name: str | None, *, user: str | None = None, reason: str | None = None
    ) -> CubeInfo:
        """Make ``name`` the adapter chat uses on this cube when none is named (``None``:
        none). One ``adapter_attach`` event."""
        return self._tier.attach(cube, name, user=user, reason=reason)

    @operation("DELETE", _ADAPTER, tag=_LORA)
    def delete(
        self, cube: str, name: str, *, user: str | None = None, reason: str | None = None
    ) -> builtins.list[Event]:
        """Remove every version of adapter ``name`` (one ``adapter_drop`` event each), and
        detach it if it is the cube's default."""
        return self._tier.delete(cube, name, user=user, reason=reason)

    @operation("POST", f"{_ADAPTER}/import", status=201, tag=_LORA, archive=ADAPTER_EXPORT)
    def import_adapter(
        self,
        cube: str,
        directory: str | Path,
        *,
        name: str,
        density: float | None = None,
        user: str | None = None,
        reason: str | None = None,
    ) -> AdapterEntry:
        """A new version of ``name`` from a peft adapter directory (``adapter_config.json`` +
        ``adapter_model.safetensors``; pickled ``.bin`` weights are refused). A directory this
        library exported must be for the loaded base model (:class:`ModelMismatch`). Over HTTP
        the directory travels as a tar."""
        return self._tier.import_adapter(
            cube, directory, name=name, density=density, user=user, reason=reason
        )

    @operation("GET", f"{_ADAPTER}/export", tag=_LORA, archive=ADAPTER_EXPORT)
    def export(
        self, cube: str, name: str, directory: str | Path, *, version: int | None = None
    ) -> Path:
        """Write a peft adapter directory (fp32 safetensors, ``adapter_config.json``) and the
        manifest, loadable by peft itself or by :meth:`import_adapter`. Over HTTP the
        directory travels as a tar."""
        return self._tier.export(cube, name, directory, version=version)


class EmbeddedLora(Lora):
    """``mos.lora`` of an embedded handle, which also loads the adapters chat uses onto the
    model."""

    def for_chat(self, cube: str, name: str | None) -> AdapterEntry | None:
        """The adapter version chat should use: ``name``'s latest (refused while it is
        stale), else the cube's default (skipped while stale), else none."""
        return self._tier.for_chat(cube, name)

    def activate(self, entry: AdapterEntry) -> str:
        """Load ``entry`` onto the model (once) and return the slot to generate with."""
        return self._tier.activate(entry)
