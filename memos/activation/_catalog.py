"""The activation tier of a MemOS instance (``mos.kv``): build, list, load and drop KV caches.

Each entry is a derived artifact of its cube: a ``kv_build`` event records it (manifest,
sources, the sha256 of its safetensors blob) and a ``kv_drop`` event retires it, either on
request or, in the same transaction, when one of its source items gets a new version. Loaded
caches stay resident (least recently used first out, within a byte budget) as
:class:`memos.llm.ResidentPrefix` objects, which generations never write into.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from memos.activation._block import render_block, template_version
from memos.activation._manifest import KV_DTYPES, KVEntry, KVManifest
from memos.core import _validation as check
from memos.core._derived import KV_KIND
from memos.core._governance import NO_KV, allowed, refuse_labelled
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
    CorruptArtifact,
    IntegrityError,
    InvalidInput,
    ItemNotFound,
    KVEntryNotFound,
    ModelMismatch,
)

if TYPE_CHECKING:
    from memos.llm import LLMBackend, ResidentPrefix

# room left after a block for the question and the answer (a quarter of a small model's)
_ROOM_TOKENS = 256
MAX_BLOCK_ITEMS = 512
DEFAULT_RESIDENT_BYTES = 2 * 2**30

ModelProvider = Callable[[], "LLMBackend"]
Retriever = Callable[[str, str, int, "str | None"], list[MemoryItem]]


class KVMemory:
    """KV caches of memory blocks for one local model; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        model: ModelProvider,
        cube_info: Callable[[str, Access], CubeInfo],
        retrieve: Retriever,
        actor: Callable[[str | None], str],
        limits: Limits,
        resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    ) -> None:
        self._store = store
        self._model = model
        self._cube_info = cube_info
        self._retrieve = retrieve
        self._actor = actor
        self._limits = limits
        self._resident_bytes = resident_bytes
        # blob digest -> (the cube that loaded it last, its cache), least recently used first
        self._resident: OrderedDict[str, tuple[str, ResidentPrefix]] = OrderedDict()
        self._lock = threading.Lock()

    def scoped(
        self, cube_info: Callable[[str, Access], CubeInfo], actor: Callable[[str | None], str]
    ) -> Self:
        """This catalog as another principal sees it: the same store, model and loaded state,
        other access rules (see :class:`memos.MemOS.as_principal`)."""
        view = copy.copy(self)
        view._cube_info, view._actor = cube_info, actor
        return view

    # building ---------------------------------------------------------------------------

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
        extra: Mapping[str, Any] | None = None,
    ) -> KVEntry:
        """Compute and store the KV cache of a memory block: the given items in that order,
        or the ``k`` best for ``query`` in rank order. One ``kv_build`` event (``extra``: more
        fields of its payload, such as the scheduler's ``migration``). A block whose first
        memories are those a stored block starts with (same versions, same storage dtype)
        continues the cache of them: only the rest is computed, and the event names the block
        (``extends``) and the tokens computed (``prefilled``)."""
        info = self._cube_info(cube, Access.WRITE)
        storage = _checked_dtype(info.kv_dtype if dtype is None else dtype)
        actor, reason = self._actor(user), check.reason(reason, self._limits)
        if (item_ids is None) == (query is None):
            raise InvalidInput("build a KV block from item_ids or from a query (one of them)")
        if query is not None:
            k = check.positive(k, "k", MAX_BLOCK_ITEMS)
            found = self._retrieve(check.text(query, self._limits), info.name, k, user)
            items = [item for item in found if allowed(item, NO_KV)]
            if not items:
                raise InvalidInput(f"no memory of cube {info.name!r} matches the query")
        else:
            items = self._block_items(info.name, item_ids)
        model = self._model()
        prefix = model.split_prompt(render_block(items), "").prefix
        if (
            len(prefix) + min(_ROOM_TOKENS, model.shape.max_positions // 4)
            > model.shape.max_positions
        ):
            raise InvalidInput(
                f"a block of {len(prefix)} tokens leaves no room for a question in the "
                f"{model.shape.max_positions} positions of {model.name}"
            )
        from memos.activation._tensors import cache_to_bytes, token_sha256

        manifest = KVManifest(
            model_name=model.name[:200],
            model=model.fingerprint,
            dtype=storage,  # type: ignore[arg-type]
            layers=model.shape.layers,
            kv_heads=model.shape.kv_heads,
            head_dim=model.shape.head_dim,
            tokens=len(prefix),
            template_version=template_version(model.template_sha256()),
            token_sha256=token_sha256(prefix),
            sources=tuple(SourceRef(item_id=i.id, version=i.version) for i in items),
        )
        base = self._continued(info.name, items, prefix, storage)
        extra = dict(extra or {})
        if base is None:
            data = cache_to_bytes(manifest, prefix, model.prefill(prefix))
        else:
            layers = model.prefill(prefix, prefix=base[1])
            data = cache_to_bytes(manifest, prefix, layers)
            extra |= {"extends": base[0].id, "prefilled": len(prefix) - base[1].length}
        entry = DerivedEntry(
            id=_new_entry_id(),
            cube=info.name,
            kind=KV_KIND,
            blob=self._store.put_blob(data),
            size=len(data),
            sources=manifest.sources,
            manifest=manifest.model_dump(mode="json"),
            created_at=utcnow(),
        )
        change = Change(
            op=EventOp.KV_BUILD, cube=info.name, actor=actor, ts=entry.created_at,
            reason=reason, derived=entry, extra=extra,
        )  # fmt: skip
        self._store.commit([change])
        built = KVEntry.from_derived(entry)
        # resident as stored: an int8 or bf16 cache is used exactly as it will load later
        self._keep(info, built.blob, _resident_prefix(data, manifest))
        return built

    def _continued(
        self, cube: str, items: Sequence[MemoryItem], prefix: Sequence[int], dtype: str
    ) -> tuple[KVEntry, ResidentPrefix] | None:
        """The stored block (usable, of ``dtype``) whose first memories at their versions begin
        ``items`` for longest, with the cache of those memories (all of the block's, or the
        start of its cache: a causal model's cache of a prefix is the prefix of its cache), when
        their tokens begin ``prefix``: a block that starts with them computes only the rest, as
        a chat over them would."""
        model = self._model()
        wanted = [(i.id, i.version) for i in items]
        shared = [
            (_leading(wanted, [(s.item_id, s.version) for s in entry.sources]), entry)
            for entry in self._usable(cube) if entry.manifest.dtype == dtype
        ]  # fmt: skip
        bases = [(lead, entry) for lead, entry in shared if 0 < lead < len(wanted)]
        for lead, entry in sorted(bases, key=lambda b: (-b[0], len(b[1].sources), b[1].id)):
            head = tuple(model.split_prompt(render_block(items[:lead]), "").prefix)
            if len(head) >= len(prefix) or tuple(prefix[: len(head)]) != head:
                continue
            with contextlib.suppress(CorruptArtifact, IntegrityError, ModelMismatch):
                cache = self.load(entry)
                if cache.token_ids[: len(head)] == head:
                    return entry, cache if cache.length == len(head) else cache.head(len(head))
        return None

    def _block_items(self, cube: str, item_ids: Sequence[str] | None) -> list[MemoryItem]:
        if isinstance(item_ids, str) or not isinstance(item_ids, Sequence) or not item_ids:
            raise InvalidInput("item_ids must be a non-empty list of memory ids")
        if not all(isinstance(i, str) for i in item_ids):
            raise InvalidInput("item_ids must be strings")
        if len(item_ids) > MAX_BLOCK_ITEMS or len(set(item_ids)) != len(item_ids):
            raise InvalidInput(f"a block holds up to {MAX_BLOCK_ITEMS} distinct memories")
        found = self._store.get_items(item_ids)
        for item_id in item_ids:
            item = found.get(item_id)
            if item is None or item.cube != cube:
                raise ItemNotFound(
                    f"no memory with id {item_id!r} in cube {cube!r}", item_id=item_id
                )
            if item.status != ItemStatus.ACTIVE:
                raise Conflict(f"memory {item_id} is {item.status.value}", item_id=item_id)
        refuse_labelled(found.values(), NO_KV, "a KV block")
        return [found[i] for i in item_ids]

    # reading ----------------------------------------------------------------------------

    def list(self, cube: str) -> list[KVEntry]:
        """The cube's stored KV caches, oldest first."""
        info = self._cube_info(cube, Access.READ)
        return [KVEntry.from_derived(e) for e in self._store.derived_entries(info.name, KV_KIND)]

    def _readable(self, cube: str) -> Sequence[KVEntry]:
        """The entries whose records parse: a damaged record (which ``verify`` reports) makes
        chat recompute rather than fail."""
        info = self._cube_info(cube, Access.READ)
        entries = []
        for derived in self._store.derived_entries(info.name, KV_KIND):
            with contextlib.suppress(CorruptArtifact):
                entries.append(KVEntry.from_derived(derived))
        return entries

    def _usable(self, cube: str) -> Sequence[KVEntry]:
        """The readable entries made by the current model with the current templates."""
        model = self._model()
        version = template_version(model.template_sha256())
        return [
            entry for entry in self._readable(cube)
            if entry.manifest.model == model.fingerprint
            and entry.manifest.template_version == version
        ]  # fmt: skip

    def get(self, cube: str, entry_id: str) -> KVEntry:
        for entry in self.list(cube):
            if entry.id == entry_id:
                return entry
        raise KVEntryNotFound(f"cube {cube!r} has no KV entry {entry_id!r}", entry=str(entry_id))

    def drop(
        self,
        cube: str,
        entry_id: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Event:
        """Retire a KV cache (one ``kv_drop`` event); its blob stays until collected."""
        self._cube_info(cube, Access.WRITE)
        entry = self.get(cube, entry_id)
        change = Change(
            op=EventOp.KV_DROP, cube=entry.cube, actor=self._actor(user), ts=utcnow(),
            reason=check.reason(reason, self._limits), dropped=entry.id, extra=dict(extra or {}),
        )  # fmt: skip
        return self._store.commit([change])[0]

    def covering(self, cube: str, items: Sequence[MemoryItem]) -> KVEntry | None:
        """The smallest usable stored block holding every one of ``items`` at its current
        version, made by the current model with the current templates."""
        best = self.best_block(cube, items)
        held = set() if best is None else {(s.item_id, s.version) for s in best.sources}
        return best if {(i.id, i.version) for i in items} <= held else None

    def best_block(self, cube: str, items: Sequence[MemoryItem]) -> KVEntry | None:
        """The usable stored block holding the most of ``items`` at their current versions
        (the smallest of those), made by the current model with the current templates; none
        when no block holds any of them."""
        wanted = {(i.id, i.version) for i in items}
        scored = [
            (len(wanted & {(s.item_id, s.version) for s in entry.sources}), entry)
            for entry in self._usable(cube)
        ]
        best = max(scored, key=lambda pair: (pair[0], -pair[1].tokens), default=None)
        return None if best is None or best[0] == 0 else best[1]

    def load(self, entry: KVEntry) -> ResidentPrefix:
        """The entry's cache, resident in RAM; refused (:class:`ModelMismatch`) unless it was
        made by the current model, and (:class:`CorruptArtifact`) unless it checks out."""
        model = self._model()
        manifest = entry.manifest
        if manifest.model != model.fingerprint:
            raise ModelMismatch(
                f"KV entry {entry.id} was made by model {manifest.model.short} "
                f"({manifest.model_name}), not by the loaded {model.fingerprint.short}",
                entry=entry.id,
            )
        shape = model.shape
        if (manifest.layers, manifest.kv_heads, manifest.head_dim) != (
            shape.layers, shape.kv_heads, shape.head_dim,
        ):  # fmt: skip
            raise CorruptArtifact(f"KV entry {entry.id} does not have the model's shape")
        with self._lock:
            held = self._resident.get(entry.blob)
            if held is not None:
                self._resident.move_to_end(entry.blob)
                return held[1]
        data = self._store.get_blob(entry.blob)
        if data is None:
            raise IntegrityError(f"the blob {entry.blob} of KV entry {entry.id} is missing")
        resident = _resident_prefix(data, manifest)
        self._keep(self._cube_info(entry.cube, Access.READ), entry.blob, resident)
        return resident

    def resident(self, cube: str | None = None) -> dict[str, int]:
        """Blob digest -> bytes of the caches held in RAM now (the ones ``cube`` loaded)."""
        with self._lock:
            return {
                digest: prefix.nbytes for digest, (owner, prefix) in self._resident.items()
                if cube is None or owner == cube
            }  # fmt: skip

    def let_go(self, digests: Iterable[str]) -> None:
        """Stop holding the caches of those blobs in RAM (their entries are gone)."""
        with self._lock:
            for digest in digests:
                self._resident.pop(digest, None)

    def hold_within(self, cube: str, budget: int | None) -> None:
        """Let go of the cube's least recently used caches beyond ``budget`` bytes."""
        if budget is not None:
            with self._lock:
                self._evict(lambda owner: owner == cube, budget)

    def _keep(self, info: CubeInfo, digest: str, prefix: ResidentPrefix) -> None:
        """Hold ``prefix`` in RAM within the cube's ``kv_resident_bytes`` budget (its least
        recently used caches go first; one larger than the budget is used, not held) and the
        process's byte budget (likewise, across cubes)."""
        budget = info.scheduler.budgets.kv_resident_bytes if info.scheduler else None
        with self._lock:
            self._resident.pop(digest, None)
            if budget is not None:
                self._evict(lambda owner: owner == info.name, budget - prefix.nbytes)
                if prefix.nbytes > budget:
                    return
            self._resident[digest] = (info.name, prefix)
            self._evict(lambda _owner: True, self._resident_bytes, keep_last=True)

    def _evict(self, whose: Callable[[str], bool], room: int, *, keep_last: bool = False) -> None:
        """Drop the least recently used caches ``whose`` owner matches until theirs take at
        most ``room`` bytes (the lock is held)."""
        held = [(d, owner, p.nbytes) for d, (owner, p) in self._resident.items() if whose(owner)]
        total = sum(size for _, _, size in held)
        for digest, _, size in held[:-1] if keep_last else held:
            if total <= room:
                break
            del self._resident[digest]
            total -= size


def _checked_dtype(dtype: str) -> str:
    if dtype not in KV_DTYPES:
        raise InvalidInput(f"KV storage dtype must be one of {', '.join(KV_DTYPES)}, not {dtype!r}")
    return dtype


def _new_entry_id() -> str:
    return f"kv-{time.time_ns() // 1_000_000:012x}{os.urandom(6).hex()}"


def _resident_prefix(data: bytes, manifest: KVManifest) -> ResidentPrefix:
    """A stored cache, decoded into RAM. torch loads here, when a cache is first built or
    used, so listing or dropping caches never pays for it."""
    from memos.activation._tensors import cache_from_bytes
    from memos.llm import ResidentPrefix

    return ResidentPrefix(*cache_from_bytes(data, manifest))


def _leading(wanted: Sequence[tuple[str, int]], held: Sequence[tuple[str, int]]) -> int:
    """How many of ``wanted``'s first memories ``held`` starts with, in order."""
    return next((n for n, (a, b) in enumerate(zip(wanted, held, strict=False)) if a != b),
                min(len(wanted), len(held)))  # fmt: skip
