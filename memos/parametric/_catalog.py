"""The parametric tier of a MemOS instance (``mos.lora``): named, versioned LoRA adapters.

Every version of an adapter is a derived artifact of its cube: an ``adapter_build`` event
records it (manifest, sources, the sha256 of its weights blob); versions are never rewritten,
so a rollback is a new version restoring an old one's weights. When a source memory changes,
the store marks the versions trained on it stale (``adapter_stale``) in the same transaction;
chat does not use a stale adapter until it is retrained without the change or rolled back to
a version that never saw it. ``adapter_attach`` sets the adapter chat uses by default.
"""

from __future__ import annotations

import builtins
import copy
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from pydantic import ValidationError

from memos.core import _validation as check
from memos.core._derived import ADAPTER_KIND
from memos.core._governance import NO_PARAMETRIC, allowed, refuse_labelled
from memos.core._store import Change, Store
from memos.core._types import (
    Access,
    CubeInfo,
    DerivedEntry,
    Event,
    EventOp,
    ItemStatus,
    MemoryItem,
    SourceRef,
    utcnow,
)
from memos.core._validation import Limits
from memos.errors import (
    Conflict,
    IntegrityError,
    InvalidInput,
    ItemNotFound,
    ModelMismatch,
    NotFound,
    VersionConflict,
)
from memos.parametric._manifest import (
    DEFAULT_DENSITY,
    AdapterEntry,
    AdapterManifest,
    new_manifest,
    settings_of,
)

if TYPE_CHECKING:  # torch loads with the weights (training, encoding), not with the catalogue
    from memos.llm import LocalModel
    from memos.parametric._weights import Weights

MAX_FACTS = 512
# adapter versions kept loaded for chat per model (SmolLM2's: ≈ 10 MB each in fp32)
MAX_LOADED_ADAPTERS = 8
# commits of one new adapter version, each after another version took its number
_VERSION_ATTEMPTS = 10
_NAME = re.compile(check.ADAPTER_NAME)
# compressed weights are kept when they recall at most this fraction fewer facts than raw
Retriever = Callable[[str, str, int, "str | None"], list[MemoryItem]]
Progress = Callable[[int, int, float], None]


class LoraMemory:
    """Adapters of one local base model; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        model: Callable[[], LocalModel],
        cube_info: Callable[[str, Access], CubeInfo],
        retrieve: Retriever,
        actor: Callable[[str | None], str],
        limits: Limits,
    ) -> None:
        self._store = store
        self._model = model
        self._cube_info = cube_info
        self._retrieve = retrieve
        self._actor = actor
        self._limits = limits
        self._lock = threading.Lock()

    def scoped(
        self, cube_info: Callable[[str, Access], CubeInfo], actor: Callable[[str | None], str]
    ) -> Self:
        """This catalog as another principal sees it: the same store, model and loaded state,
        other access rules (see :class:`memos.MemOS.as_principal`)."""
        view = copy.copy(self)
        view._cube_info, view._actor = cube_info, actor
        return view

    # reading ----------------------------------------------------------------------------

    def list(self, cube: str, name: str | None = None) -> list[AdapterEntry]:
        """Every stored version (of adapter ``name``), oldest first."""
        info = self._cube_info(cube, Access.READ)
        entries = [
            AdapterEntry.from_derived(e)
            for e in self._store.derived_entries(info.name, ADAPTER_KIND)
        ]
        return [e for e in entries if name is None or e.name == name]

    def show(self, cube: str, name: str, version: int | None = None) -> AdapterEntry:
        """Adapter ``name`` at ``version`` (its latest by default)."""
        versions = self.list(cube, _checked_name(name))
        if version is not None:
            versions = [e for e in versions if e.version == version]
        if not versions:
            at = "" if version is None else f" version {version}"
            raise NotFound(f"cube {cube!r} has no adapter {name!r}{at}", adapter=name)
        return max(versions, key=lambda e: e.version)

    # making versions --------------------------------------------------------------------

    def consolidate(
        self,
        cube: str,
        item_ids: Sequence[str] | None = None,
        *,
        name: str,
        query: str | None = None,
        k: int = 20,
        recipe: Any = None,
        density: float | None = DEFAULT_DENSITY,
        user: str | None = None,
        reason: str | None = None,
        progress: Progress | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AdapterEntry:
        """Train a new version of adapter ``name`` on memories (given ids, or the ``k`` best
        for ``query``), stored ComPEFT-compressed at ``density`` when that keeps its recall
        (``density=None``: fp32). One ``adapter_build`` event (``extra``: more of its
        payload)."""
        info = self._cube_info(cube, Access.WRITE)
        name, density = _checked_name(name), _checked_density(density)
        _recipe(recipe)  # a bad recipe is refused before anything is trained
        if (item_ids is None) == (query is None):
            raise InvalidInput("consolidate memories given by item_ids or by a query (one)")
        if query is not None:
            k = check.positive(k, "k", MAX_FACTS)
            found = self._retrieve(check.text(query, self._limits), info.name, k, user)
            items = [item for item in found if allowed(item, NO_PARAMETRIC)]
        else:
            items = self._items(info.name, item_ids)
        if not items:
            raise InvalidInput(f"no memory of cube {info.name!r} to consolidate")
        return self._train_version(info, name, items, recipe, density, "consolidate", None,
                                   user, reason, progress, extra)  # fmt: skip

    def retrain(
        self,
        cube: str,
        name: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        progress: Progress | None = None,
    ) -> AdapterEntry:
        """A new version trained on the current versions of the latest one's sources that are
        still active: a deleted memory is left out (and one labelled ``no-parametric``), a
        changed one is learned as it is now."""
        info = self._cube_info(cube, Access.WRITE)
        latest = self.show(info.name, name)
        items = self._learnable(info.name, latest.sources)
        if not items:
            raise Conflict(f"no source of adapter {name!r} is left; delete the adapter instead")
        recipe = latest.manifest.recipe
        # compression is tried again: it is kept only if the new weights keep their recall
        density = latest.manifest.density or DEFAULT_DENSITY
        return self._train_version(info, latest.name, items, recipe, density, "retrain",
                                   latest.version, user, reason, progress)  # fmt: skip

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
        info = self._cube_info(cube, Access.WRITE)
        target = self.show(info.name, name, check.positive(to_version, "to_version", 2**31))
        latest = self.show(info.name, name)
        manifest = target.manifest.model_copy(
            update={
                "version": latest.version + 1,
                "origin": "rollback",
                "from_version": target.version,
            }
        )
        stale = not self._current(target.sources)
        return self._commit(info, manifest, target.blob, target.size, stale, user, reason)

    def dampen_version(
        self,
        cube: str,
        entry: AdapterEntry,
        forget: Sequence[str],
        *,
        user: str | None = None,
        reason: str | None = None,
    ) -> AdapterEntry | None:
        """A new version of ``entry``'s adapter with the weights that mattered to the facts
        ``forget`` dampened (SSD, :mod:`memos.parametric._dampen`): no training. Its sources
        are ``entry``'s that are still active (and not labelled ``no-parametric``), whose
        importance is what dampening keeps; None when none is left. ``entry`` may already be
        dropped from the cube: its blob is what is read (an erasure dampens the version it
        drops). Stored in fp32, as compression would undo the dampening's fine scaling."""
        from memos.parametric._dampen import dampen

        info = self._cube_info(cube, Access.WRITE)
        kept = self._learnable(info.name, entry.sources)
        if not kept:
            return None
        model, recipe = self._model(), _recipe(entry.manifest.recipe)
        with self._lock:
            weights, report = dampen(
                model, self._weights(entry), recipe, forget, [i.text for i in kept]
            )
        sources = tuple(SourceRef(item_id=i.id, version=i.version) for i in kept)
        manifest = new_manifest(
            model, entry.name, "dampen", entry.manifest.lora, weights, None, sources,
            entry.manifest.recipe, dict(report.model_dump()), entry.version,
            self._next_version(info, entry.name),
        )  # fmt: skip
        data = _encode(weights, manifest)
        return self._commit(
            info, manifest, self._store.put_blob(data), len(data), False, user, reason
        )

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
        library exported must be for the loaded base model (:class:`ModelMismatch`)."""
        from memos.parametric._peftdir import read_adapter_dir

        info = self._cube_info(cube, Access.WRITE)
        name, density = _checked_name(name), _checked_density(density)
        model = self._model()
        lora, weights, exported = read_adapter_dir(Path(directory), model)
        if exported is not None and exported.base_model != model.fingerprint:
            raise ModelMismatch(
                f"the adapter in {directory} was made for base model "
                f"{exported.base_model.short}, not the loaded {model.fingerprint.short}"
            )
        manifest = new_manifest(
            model, name, "import", lora, weights, density, (), None, {}, None,
            self._next_version(info, name),
        )  # fmt: skip
        data = _encode(weights, manifest)
        return self._commit(
            info, manifest, self._store.put_blob(data), len(data), False, user, reason
        )

    def export(
        self, cube: str, name: str, directory: str | Path, *, version: int | None = None
    ) -> Path:
        """Write a peft adapter directory (fp32 safetensors, ``adapter_config.json``) and the
        manifest, loadable by peft itself or by :meth:`import_adapter`."""
        from memos.parametric._peftdir import write_adapter_dir

        entry = self.show(cube, name, version)
        weights = self._weights(entry)
        written: Path = write_adapter_dir(Path(directory), entry.manifest, weights)
        return written

    # chat -------------------------------------------------------------------------------

    def attach(
        self, cube: str, name: str | None, *, user: str | None = None, reason: str | None = None
    ) -> CubeInfo:
        """Make ``name`` the adapter chat uses on this cube when none is named (``None``:
        none). One ``adapter_attach`` event."""
        info = self._cube_info(cube, Access.WRITE)
        if name is not None:
            name = self.show(info.name, name).name
        new = info.model_copy(update={"default_adapter": name})
        change = Change(
            op=EventOp.ADAPTER_ATTACH, cube=info.name, actor=self._actor(user), ts=utcnow(),
            reason=check.reason(reason, self._limits), cube_info=new,
        )  # fmt: skip
        self._store.commit([change])
        return new

    def delete(
        self, cube: str, name: str, *, user: str | None = None, reason: str | None = None
    ) -> builtins.list[Event]:
        """Remove every version of adapter ``name`` (one ``adapter_drop`` event each), and
        detach it if it is the cube's default."""
        info = self._cube_info(cube, Access.WRITE)
        versions = self.list(info.name, _checked_name(name))
        if not versions:
            raise NotFound(f"cube {info.name!r} has no adapter {name!r}", adapter=name)
        actor, reason, now = self._actor(user), check.reason(reason, self._limits), utcnow()
        changes = [
            Change(
                op=EventOp.ADAPTER_DROP,
                cube=info.name,
                actor=actor,
                ts=now,
                reason=reason,
                dropped=entry.id,
            )
            for entry in versions
        ]
        if info.default_adapter == name:
            changes.append(
                Change(op=EventOp.ADAPTER_ATTACH, cube=info.name, actor=actor, ts=now,
                       reason=reason, cube_info=info.model_copy(update={"default_adapter": None}))
            )  # fmt: skip
        return self._store.commit(changes)

    def drop_version(
        self,
        cube: str,
        entry_id: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Event:
        """Remove one stored version (by its entry id): one ``adapter_drop`` event (``extra``:
        more of its payload). The cube's default adapter stays attached: chat then uses its
        latest version left, or none."""
        info = self._cube_info(cube, Access.WRITE)
        if not any(e.id == entry_id for e in self.list(info.name)):
            raise NotFound(f"cube {info.name!r} has no adapter version {entry_id!r}")
        change = Change(
            op=EventOp.ADAPTER_DROP, cube=info.name, actor=self._actor(user), ts=utcnow(),
            reason=check.reason(reason, self._limits), dropped=entry_id, extra=dict(extra or {}),
        )  # fmt: skip
        return self._store.commit([change])[0]

    def restore_version(
        self,
        cube: str,
        entry: DerivedEntry,
        *,
        user: str | None = None,
        reason: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AdapterEntry:
        """A dropped version back, as a new entry of the same weights (its blob must still
        be stored) and, unless another version took it meanwhile, the same number; stale if
        any of its sources changed since. One ``adapter_build`` event."""
        info = self._cube_info(cube, Access.WRITE)
        manifest = AdapterEntry.from_derived(entry).manifest
        if self._store.get_blob(entry.blob) is None:
            raise IntegrityError(f"the blob {entry.blob} of adapter {manifest.name} is gone")
        stale = not self._current(manifest.sources)
        return self._commit(info, manifest, entry.blob, entry.size, stale, user, reason, extra)

    def for_chat(self, cube: str, name: str | None) -> AdapterEntry | None:
        """The adapter version chat should use: ``name``'s latest (refused while it is
        stale), else the cube's default (skipped while stale), else none."""
        info = self._cube_info(cube, Access.READ)
        wanted = name if name is not None else info.default_adapter
        if wanted is None:
            return None
        entry = self.show(info.name, wanted)
        if not entry.stale:
            return entry
        if name is None:
            return None
        raise Conflict(
            f"adapter {wanted!r} (v{entry.version}) was trained on memories that changed; "
            "retrain it or roll it back to a version that never saw them",
            adapter=wanted,
        )

    def activate(self, entry: AdapterEntry) -> str:
        """Load ``entry`` onto the model (once) and return the slot to generate with."""
        model = self._model()
        if entry.manifest.base_model != model.fingerprint:
            raise ModelMismatch(
                f"adapter {entry.name} v{entry.version} was trained on base model "
                f"{entry.manifest.base_model.short}, not the loaded {model.fingerprint.short}",
                adapter=entry.name,
            )
        # the slot names the weights (their blob), so every MemOS sharing this model object
        # finds an adapter loaded once, and two versions never share a slot
        slot = f"{entry.id}-{entry.blob[:16]}"
        with self._lock:
            if slot not in model.adapters.names:
                model.adapters.add(slot, entry.manifest.lora.peft_kwargs(), self._weights(entry))
            model.adapters.touch(slot)
            # bounded RAM in a long-lived process: a stale, deleted or unused version goes
            model.adapters.evict(keep=MAX_LOADED_ADAPTERS)
        return slot

    # internals --------------------------------------------------------------------------

    def _train_version(
        self,
        info: CubeInfo,
        name: str,
        items: Sequence[MemoryItem],
        recipe: Any,
        density: float | None,
        origin: str,
        from_version: int | None,
        user: str | None,
        reason: str | None,
        progress: Progress | None,
        extra: Mapping[str, Any] | None = None,
    ) -> AdapterEntry:
        from memos.parametric._density import density_keeping_recall, slot
        from memos.parametric._train import consolidate

        model, recipe = self._model(), _recipe(recipe)
        facts = [item.text for item in items]
        training = slot("training")
        with self._lock:
            result = consolidate(model, facts, recipe, adapter=training, progress=progress)
            weights = model.adapters.weights(training)
            model.adapters.remove(training)
            density, kept = density_keeping_recall(model, weights, recipe, facts, density)
        metrics: dict[str, float | int | bool | str] = dict(result.model_dump())
        if kept is not None:
            metrics["compressed_recall"] = kept
        sources = tuple(SourceRef(item_id=i.id, version=i.version) for i in items)
        manifest = new_manifest(
            model, name, origin, settings_of(recipe), weights, density, sources,
            recipe.model_dump(mode="json"), metrics, from_version, self._next_version(info, name),
        )  # fmt: skip
        data = _encode(weights, manifest)
        return self._commit(
            info, manifest, self._store.put_blob(data), len(data), False, user, reason, extra
        )

    def _next_version(self, info: CubeInfo, name: str) -> int:
        return 1 + max((e.version for e in self.list(info.name, name)), default=0)

    def _commit(
        self,
        info: CubeInfo,
        manifest: AdapterManifest,
        blob: str,
        size: int,
        stale: bool,
        user: str | None,
        reason: str | None,
        extra: Mapping[str, Any] | None = None,
    ) -> AdapterEntry:
        """Commit a new version; when another one of the same number landed meanwhile (two
        trainings of the adapter finishing together), this one takes the next number."""
        for _ in range(_VERSION_ATTEMPTS):
            entry = DerivedEntry(
                id=f"lora-{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}",
                cube=info.name, kind=ADAPTER_KIND, blob=blob, size=size, sources=manifest.sources,
                manifest=manifest.model_dump(mode="json"), created_at=utcnow(), stale=stale,
            )  # fmt: skip
            change = Change(
                op=EventOp.ADAPTER_BUILD, cube=info.name, actor=self._actor(user),
                ts=entry.created_at, reason=check.reason(reason, self._limits), derived=entry,
                extra=dict(extra or {}),
            )  # fmt: skip
            try:
                self._store.commit([change])
            except VersionConflict as conflict:
                if "taken" not in conflict.details:
                    raise
                version = self._next_version(info, manifest.name)
                manifest = manifest.model_copy(update={"version": version})
                continue
            return AdapterEntry.from_derived(entry)
        raise Conflict(f"adapter {manifest.name!r}: other versions kept landing first")

    def _weights(self, entry: AdapterEntry) -> Weights:
        data = self._store.get_blob(entry.blob)
        if data is None:
            raise IntegrityError(
                f"the blob {entry.blob} of adapter {entry.name} v{entry.version} is missing"
            )
        from memos.parametric._weights import decode

        return decode(data, entry.manifest, self._model().model)

    def _learnable(self, cube: str, sources: Sequence[SourceRef]) -> builtins.list[MemoryItem]:
        """The current versions of ``sources`` that are still active and not labelled
        ``no-parametric``, in their order."""
        found = self._store.get_items([s.item_id for s in sources], cube=cube)
        return [
            found[s.item_id]
            for s in sources
            if s.item_id in found
            and found[s.item_id].status == ItemStatus.ACTIVE
            and allowed(found[s.item_id], NO_PARAMETRIC)
        ]

    def _current(self, sources: Sequence[SourceRef]) -> bool:
        found = self._store.get_items([s.item_id for s in sources])
        return all(
            s.item_id in found
            and found[s.item_id].version == s.version
            and found[s.item_id].status == ItemStatus.ACTIVE
            for s in sources
        )

    def _items(self, cube: str, item_ids: Sequence[str] | None) -> builtins.list[MemoryItem]:
        if isinstance(item_ids, str) or not isinstance(item_ids, Sequence) or not item_ids:
            raise InvalidInput("item_ids must be a non-empty list of memory ids")
        if not all(isinstance(i, str) for i in item_ids):
            raise InvalidInput("item_ids must be strings")
        if len(item_ids) > MAX_FACTS or len(set(item_ids)) != len(item_ids):
            raise InvalidInput(f"an adapter is trained on up to {MAX_FACTS} distinct memories")
        found = self._store.get_items(item_ids)
        for item_id in item_ids:
            item = found.get(item_id)
            if item is None or item.cube != cube:
                raise ItemNotFound(
                    f"no memory with id {item_id!r} in cube {cube!r}", item_id=item_id
                )
            if item.status != ItemStatus.ACTIVE:
                raise Conflict(f"memory {item_id} is {item.status.value}", item_id=item_id)
        refuse_labelled(found.values(), NO_PARAMETRIC, "an adapter")
        return [found[i] for i in item_ids]


def _recipe(recipe: Any) -> Any:
    from memos.parametric._train import TrainingRecipe

    if isinstance(recipe, TrainingRecipe):
        return recipe
    try:
        # through JSON: the recipe is strict, and a stored one has its tuples as arrays
        return TrainingRecipe.model_validate_json(json.dumps(recipe or {}))
    except (ValidationError, TypeError) as exc:
        raise InvalidInput(f"not a training recipe: {exc}") from exc


def _checked_density(density: float | None) -> float | None:
    if density is not None and (
        isinstance(density, bool) or not isinstance(density, float | int) or not 0 < density <= 1
    ):
        raise InvalidInput(f"density must be in (0, 1], not {density!r}")
    return density


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"adapter name {name!r}: 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return name


def _encode(weights: Weights, manifest: AdapterManifest) -> bytes:
    from memos.parametric._weights import encode

    return encode(weights, manifest.storage, manifest.density)
