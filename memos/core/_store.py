"""The ``Store`` protocols every persistence backend implements, and the registry that opens one.

A store keeps four things per cube: the cube record with its chain head, the event log, the item
projection and one full-precision vector per item; beside them, immutable blobs (safetensors
files such as a fitted codec's state) addressed by their sha256. Its one write path is
:meth:`Store.commit`: a batch of :class:`Change` objects applied atomically, each appending
exactly one event in the same transaction as the projection update it describes. The core
never imports a backend module; it names a URL and :func:`open_store` loads the backend
registered for its scheme.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from memos.core._access import Use
from memos.core._chain import GENESIS_HASH, seal, vector_digest
from memos.core._jobs import Job, JobState
from memos.core._types import (
    AccessStats,
    ApiKey,
    CoAccess,
    CubeInfo,
    DerivedEntry,
    Event,
    EventOp,
    ItemFilter,
    MemoryItem,
    Refusal,
)
from memos.errors import InvalidInput

if TYPE_CHECKING:  # numpy loads with the code that reads vectors, not with the interface
    import numpy as np
    from numpy.typing import NDArray

    Vector = NDArray[np.float32]


@dataclass(frozen=True)
class Change:
    """One mutation: the event to append and the item state it leaves behind.

    ``expected_version`` is checked inside the transaction: ``0`` means the item must not exist
    yet, ``None`` means no check (cube-level events only).

    ``cube_info`` (cube-level events only) is the cube's new configuration, written with the
    event; the store accepts it only as the successor of the stored one (same name,
    ``codec_version`` one higher), else raises ``VersionConflict`` and writes nothing.

    ``derived`` (``kv_build``) adds a derived artifact; the store checks inside the
    transaction that each of its sources is the item's current, active version, else raises
    ``VersionConflict``. ``dropped`` (``kv_drop``) removes the artifact with that id. When a
    change writes a new version of an item, the store appends in the same transaction the
    events :func:`memos.core._derived.invalidations` names for the artifacts built from an older
    version of it, so no artifact outlives its sources even under concurrent writers.

    ``erased`` (``erase``) are item ids of the cube to remove from the store: their rows,
    vectors, keyword entries and access statistics, and the payloads of every event of theirs
    before this one. The store refuses (``VersionConflict``) while an artifact it keeps is
    still built from one of them; drop those first, in the same commit.
    """

    op: EventOp
    cube: str
    actor: str
    ts: datetime
    item_id: str | None = None
    after: MemoryItem | None = None
    vector: Vector | None = None
    expected_version: int | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    cube_info: CubeInfo | None = None
    derived: DerivedEntry | None = None
    dropped: str | None = None
    erased: tuple[str, ...] = ()

    def sealed(self, seq: int, prev_hash: str) -> Event:
        """The event this change appends after the head ``(seq, prev_hash)``."""
        return seal(
            cube=self.cube, seq=seq + 1, prev_hash=prev_hash, ts=self.ts, actor=self.actor,
            op=self.op, item_id=self.item_id, reason=self.reason, payload=self.payload(),
        )  # fmt: skip

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"after": None if self.after is None else self.after.snapshot()}
        if self.vector is not None:
            body["vector_sha256"] = vector_digest(self.vector)
        if self.cube_info is not None:
            body["cube"] = self.cube_info.model_dump(mode="json")
        if self.derived is not None:
            body["derived"] = self.derived.model_dump(mode="json")
        if self.dropped is not None:
            body["dropped"] = self.dropped
        body.update(self.extra)
        return body


def creation_event(cube: CubeInfo, actor: str) -> Event:
    """The first event of a new cube's log, which records its configuration."""
    return seal(
        cube=cube.name, seq=1, prev_hash=GENESIS_HASH, ts=cube.created_at, actor=actor,
        op=EventOp.CUBE_CREATE, item_id=None, reason=None,
        payload={"cube": cube.model_dump(mode="json")},
    )  # fmt: skip


@dataclass(frozen=True)
class CubeImport:
    """A verified cube from an export, to be written as it is (same seqs, same hashes)."""

    cube: CubeInfo
    events: Sequence[Event]
    items: Sequence[MemoryItem]
    vectors: Mapping[str, Vector]
    # blobs the cube's configuration and derived entries name (digest -> bytes), written by
    # the store's import_cube with the rest, or not at all
    blobs: Mapping[str, bytes] = field(default_factory=dict)
    # the derived artifacts the log leaves standing
    derived: Sequence[DerivedEntry] = ()

    def check(self) -> None:
        """Refuse (``InvalidInput``) an import that would write anything but its own cube:
        every event, item, vector and derived artifact is of the cube, each id once, every
        derived artifact built from the cube's items, every blob named by its sha256."""
        name = self.cube.name
        item_ids = [item.id for item in self.items]
        derived_ids = [entry.id for entry in self.derived]
        if not self.events:
            raise InvalidInput("an imported cube has at least the event that created it")
        if len(set(item_ids)) != len(item_ids) or len(set(derived_ids)) != len(derived_ids):
            raise InvalidInput("an imported cube holds an item or derived artifact id twice")
        if any(event.cube != name for event in self.events) or any(
            item.cube != name for item in self.items
        ):
            raise InvalidInput(f"an imported event or item is not of cube {name!r}")
        if not set(self.vectors) <= set(item_ids):
            raise InvalidInput("an imported vector belongs to no imported item")
        for entry in self.derived:
            if entry.cube != name or not {s.item_id for s in entry.sources} <= set(item_ids):
                raise InvalidInput(f"derived artifact {entry.id} is not of cube {name!r}")
        for digest, data in self.blobs.items():
            if hashlib.sha256(data).hexdigest() != digest:
                raise InvalidInput(f"an imported blob is not the one named {digest}")


@runtime_checkable
class CubeLog(Protocol):
    """Cubes, their hash-chained event logs, the item projections and the full-precision
    vectors, with the search indexes a store keeps over the items."""

    url: str

    def close(self) -> None: ...

    # cubes
    def create_cube(self, cube: CubeInfo, actor: str) -> Event: ...
    def get_cube(self, name: str) -> CubeInfo | None: ...
    def list_cubes(self) -> list[CubeInfo]: ...
    def head(self, cube: str) -> tuple[int, str]: ...
    def import_cube(self, data: CubeImport) -> None:
        """Write ``data`` as a new cube, its blobs included, in one transaction, touching
        nothing else: ``CubeExists`` when the cube exists, ``Conflict`` when one of its
        item or derived artifact ids is taken (ids are global; the imported log must stay
        hash-identical, so nothing is re-keyed), ``InvalidInput`` when :meth:`CubeImport.check`
        fails; nothing is written then, not even a blob."""
        ...

    # the one write path
    def commit(self, changes: Sequence[Change]) -> list[Event]: ...

    # reads
    def get_item(self, item_id: str) -> MemoryItem | None: ...
    def get_items(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, MemoryItem]:
        """Those items that exist (in ``cube``, when given: a backend may read them in one
        request then)."""
        ...

    def iter_items(self, cube: str) -> Iterator[MemoryItem]: ...
    def filter_item_ids(self, cube: str, flt: ItemFilter) -> list[str]: ...
    def keyword_search(
        self, cube: str, query: str, k: int, flt: ItemFilter
    ) -> list[tuple[str, float]]:
        """Up to ``k`` ``(item_id, score)`` of the cube's active items passing ``flt`` that
        share words with ``query``, best first; the score is bm25, higher is better. Any
        text is a valid query (it is never parsed as query syntax); filters are applied
        before the ``k`` best are taken."""
        ...

    def index_mismatches(self, cube: str, active: Sequence[MemoryItem]) -> list[str]:
        """The ids whose entries in the cube's search indexes are not the ones ``active`` (the
        cube's active items) gives, sorted: the keyword index, and the filter indexes (user,
        session, tags, time) of a store that keeps them apart from the item rows. An id
        indexed differently, an active item missing from an index, an id indexed that
        ``active`` lacks. Damage that names no item (a keyword row for no item, statistics
        that disagree) raises ``IntegrityError`` when no item's entry differs."""
        ...

    def get_vectors(self, item_ids: Sequence[str], cube: str | None = None) -> dict[str, Vector]:
        """The full-precision vectors of those items that exist (of ``cube``, when given: a
        backend may read them in one request then)."""
        ...

    def events(
        self,
        cube: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        item_id: str | None = None,
    ) -> list[Event]: ...
    def changed_since(self, cube: str, after_seq: int) -> tuple[set[str], int]: ...
    def rewrite_files(self) -> list[str]:
        """Rewrite the backend's own files so that nothing removed (an erasure) can be read
        back from them, as far as the backend can; what was done, in words. SQLite rebuilds
        its database file (``VACUUM``); Redis asks the server to rewrite its append-only file
        and save a new snapshot when it persists (``BGREWRITEAOF``, ``BGSAVE``)."""
        ...


@runtime_checkable
class DerivedArtifacts(Protocol):
    """The standing artifacts built from a cube's items (KV caches, adapters); they are
    written and dropped by :meth:`CubeLog.commit`, with the events that name them."""

    def derived_entries(self, cube: str, kind: str | None = None) -> list[DerivedEntry]:
        """The cube's standing derived artifacts (of one ``kind``), oldest first."""
        ...


@runtime_checkable
class AccessLog(Protocol):
    """How memories are used: counts and decayed frequencies, kept beside the items rather
    than in the log (they describe use, not content)."""

    def record_access(self, item_ids: Sequence[str], at: datetime, half_life_s: float) -> None:
        """Count one use of each item at ``at``; see :class:`memos.AccessStats`."""
        ...

    def access_stats(self, item_ids: Sequence[str]) -> dict[str, AccessStats]:
        """The recorded stats of those items that were ever used."""
        ...

    def record_uses(self, cube: str, uses: Sequence[Use], half_life_s: float) -> None:
        """Count a batch of uses of the cube's memories in one write: each use counts one
        access of each of its memories and one co-access of each pair of its best ones (see
        :func:`memos.core._access.tally`)."""
        ...

    def cube_access(self, cube: str) -> dict[str, AccessStats]:
        """The stats of every memory of ``cube`` that a recorded use named."""
        ...

    def co_access(self, cube: str) -> dict[tuple[str, str], CoAccess]:
        """The stats of every pair of ``cube``'s memories retrieved together."""
        ...

    def record_refusal(self, cube: str, refusal: Refusal) -> None:
        """Keep a change a policy of ``cube`` refused (see :class:`memos.core._types.Refusal`)."""
        ...

    def refusals(self, cube: str, since: datetime | None = None) -> list[Refusal]:
        """The cube's recorded refusals (at or after ``since``), oldest first."""
        ...


@runtime_checkable
class KeyStore(Protocol):
    """The server's API keys: only the sha256 of each secret is kept."""

    def put_api_key(self, key: ApiKey) -> None:
        """Store a new key; ``Conflict`` when its id is taken."""
        ...

    def get_api_key(self, key_id: str) -> ApiKey | None: ...
    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""
        ...

    def revoke_api_key(self, key_id: str, at: datetime) -> ApiKey:
        """Mark the key revoked at ``at`` (a revoked key stays revoked at its first time);
        ``NotFound`` when there is no such key."""
        ...


@runtime_checkable
class JobQueue(Protocol):
    """Background jobs (see :mod:`memos.core._jobs`): a durable queue with leases."""

    def enqueue_job(self, job: Job) -> None:
        """Queue a new job; ``Conflict`` when its id is taken."""
        ...

    def claim_job(self, worker: str, now: datetime, lease_s: float) -> Job | None:
        """Hand ``worker`` the oldest claimable job (queued, or running past its lease) as
        running under a lease of ``lease_s`` seconds, or ``None`` when there is none."""
        ...

    def renew_job(self, job_id: str, worker: str, now: datetime, lease_s: float) -> Job:
        """Extend the lease ``worker`` holds on the job; ``Conflict`` when it holds none."""
        ...

    def finish_job(self, job: Job) -> Job:
        """Store ``job``, finished by ``job.worker``, and take it off the queue; ``Conflict``
        when that worker no longer holds it (nothing is written then)."""
        ...

    def cancel_job(self, job_id: str, now: datetime) -> Job:
        """Cancel a queued job and take it off the queue; ``Conflict`` when a worker took it
        already or it is finished (nothing is written then)."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...
    def list_jobs(self, cube: str) -> list[Job]:
        """The cube's jobs, oldest first."""
        ...

    def job_counts(self) -> dict[JobState, int]:
        """How many jobs are queued and how many running, over every cube."""
        ...

    def erase_from_jobs(self, cube: str, item_ids: Collection[str]) -> int:
        """Clear the parameters, result and reason of the cube's finished jobs that name one
        of ``item_ids`` (see :func:`memos.core._jobs.erased_from`); how many were."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Immutable, content-addressed blobs (safetensors files), written before any commit
    that names them."""

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` (idempotent) and return its sha256 hex digest."""
        ...

    def get_blob(self, digest: str) -> bytes | None:
        """The blob with this digest, ``None`` when absent; ``IntegrityError`` when what is
        stored no longer hashes to ``digest``."""
        ...

    def blob_ages(self) -> dict[str, float]:
        """Every stored blob's digest -> seconds since it was written (on Redis, since it was
        last written or read: never more than its age), sorted by digest."""
        ...

    def delete_blobs(self, digests: Collection[str]) -> int:
        """Delete those blobs (absent ones are skipped); how many were deleted."""
        ...


@runtime_checkable
class Store(CubeLog, DerivedArtifacts, AccessLog, KeyStore, JobQueue, BlobStore, Protocol):
    """Everything a backend keeps: one protocol per concern, each with its contract suite."""


# scheme -> "module:Class"; backends live in memos.stores and are imported on first use.
_BACKENDS: dict[str, str] = {
    "sqlite": "memos.stores.sqlite:SQLiteStore",
    "redis": "memos.stores.redis:RedisStore",
}


def register_backend(scheme: str, target: str) -> None:
    """Register ``"module:Class"`` as the backend for URLs of ``scheme``."""
    _BACKENDS[scheme] = target


def open_store(url: str, **options: Any) -> Store:
    """Open the store a URL names, e.g. ``sqlite:///path/to/data-dir``."""
    scheme = urlparse(url).scheme
    target = _BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(_BACKENDS))
        raise InvalidInput(f"unknown store scheme {scheme!r} (known: {known})", url=url)
    module_name, _, class_name = target.partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    store: Store = backend.from_url(url, **options)
    return store
