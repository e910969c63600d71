"""Adding memories: every record is validated first, then embedded in large chunks and
committed in batches (one transaction and one ``create`` event per memory). An engine function
that the handle's declared ``add_many`` (and ``add``) runs (see :mod:`memos.engine._handle`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from memos.core import _mutations
from memos.core import _validation as check
from memos.core._records import Record, parse_records
from memos.core._store import Change
from memos.core._types import Access, CubeInfo, EventOp, MemoryItem, MetadataValue, utcnow
from memos.engine._engine import Engine
from memos.engine._governance import check_quotas, redacted
from memos.engine._scope import Scope
from memos.errors import InvalidInput

if TYPE_CHECKING:
    from memos.core._store import Vector

# embedding a large chunk at once lets the embedder sort it by length (less padding); commits
# stay at ``batch_size`` so each transaction is short
_EMBED_CHUNK = 4096
Progress = Callable[[int], None]


def add_many(
    engine: Engine,
    scope: Scope,
    records: Iterable[str | Mapping[str, Any]],
    *,
    cube: str,
    user: str | None,
    tags: Iterable[str] | None,
    metadata: Mapping[str, MetadataValue] | None,
    session: str | None,
    batch_size: int,
    progress: Progress | None,
) -> list[MemoryItem]:
    """Add ``records`` to ``cube`` for ``scope``; see the module docstring."""
    info = scope.cube(cube, Access.WRITE)
    batch_size = check.positive(batch_size, "batch_size", 100_000)
    parsed = parse_records(
        records, user=user, tags=tags, metadata=metadata, session=session, limits=scope.limits
    )
    most = scope.limits.max_batch
    if most is not None and len(parsed) > most:
        raise InvalidInput(
            f"a batch holds at most {most} records, not {len(parsed)}", field="records", limit=most
        )
    # redaction comes before anything is embedded or stored; quotas before any embedding
    parsed, counts = redacted(info, parsed)
    check_quotas(engine, info, [(r.user, r.text) for r in parsed])
    embedder = engine.embedder_for(info)
    added: list[MemoryItem] = []
    chunk_size = max(batch_size, _EMBED_CHUNK)
    for chunk_start in range(0, len(parsed), chunk_size):
        chunk = parsed[chunk_start : chunk_start + chunk_size]
        vectors = embedder.embed([r.text for r in chunk])
        for start in range(0, len(chunk), batch_size):
            end = start + batch_size
            first = chunk_start + start
            redactions = counts[first : first + batch_size]
            added.extend(
                _commit_new(engine, scope, info, chunk[start:end], vectors[start:end], redactions)
            )
            if progress is not None:
                progress(len(chunk[start:end]))
    engine.after_write(info, scope.actor(user), scope.limits, grew=True)
    return added


def _commit_new(
    engine: Engine,
    scope: Scope,
    info: CubeInfo,
    batch: Sequence[Record],
    vectors: Vector,
    redactions: Sequence[dict[str, int]],
) -> list[MemoryItem]:
    now = utcnow()
    changes = []
    for record, vector, counts in zip(batch, vectors, redactions, strict=True):
        item = _mutations.new_item(
            cube=info.name, text=record.text, user=record.user, tags=record.tags,
            metadata=record.metadata, occurred_at=record.occurred_at, now=now,
        )  # fmt: skip
        change = Change(
            op=EventOp.CREATE, cube=info.name, actor=scope.actor(record.user), ts=now,
            item_id=item.id, after=item, vector=vector, expected_version=0,
            extra={"redacted": counts} if counts else {},
        )  # fmt: skip
        changes.append(change)
    engine.store.commit(changes)
    return [c.after for c in changes if c.after is not None]
