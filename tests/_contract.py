"""What the contract suites (``tests/test_contract_*.py``) share: the items, changes and checks
they build their cases from. The stores themselves come from the ``make_store`` and ``store``
fixtures of ``conftest.py``, one per backend of ``_backends.STORES``; a contract test talks to
its store through the protocol alone.
"""

from __future__ import annotations

import contextlib
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from memos import Change, CubeInfo, EventOp, ItemFilter, MemoryItem, Store
from memos.core._chain import verify_chain
from memos.core._store import open_store
from memos.core._types import DerivedEntry, ItemStatus, SourceRef
from memos.errors import MemosError

if TYPE_CHECKING:
    from memos.core._store import Vector

DIM = 8
T0 = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)

StoreFactory = Callable[[], Store]


# helpers --------------------------------------------------------------------------------------


def cube_info(name: str, owner: str = "alice") -> CubeInfo:
    return CubeInfo(name=name, owner=owner, embedder="hash-8", dim=DIM, created_at=T0)


def vec(seed: int) -> Vector:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def make_item(
    item_id: str,
    cube: str,
    text: str = "some text",
    *,
    user: str | None = "alice",
    tags: tuple[str, ...] = (),
    metadata: dict[str, Any] | None = None,
    occurred_at: datetime = T0,
    version: int = 1,
    status: ItemStatus = ItemStatus.ACTIVE,
) -> MemoryItem:
    return MemoryItem(
        id=item_id,
        cube=cube,
        text=text,
        user=user,
        tags=tags,
        metadata=metadata or {},
        occurred_at=occurred_at,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=version),
        version=version,
        status=status,
    )


def create(item: MemoryItem, vector: Vector | None = None, **kw: Any) -> Change:
    return Change(
        op=EventOp.CREATE,
        cube=item.cube,
        actor=kw.pop("actor", "alice"),
        ts=kw.pop("ts", T0),
        item_id=item.id,
        after=item,
        vector=vec(zlib.crc32(item.id.encode())) if vector is None else vector,
        expected_version=kw.pop("expected_version", 0),
        **kw,
    )


def revise(
    item: MemoryItem,
    *,
    vector: Vector | None = None,
    expected_version: int | None = -1,
    op: EventOp = EventOp.UPDATE,
    reason: str | None = None,
    **fields: Any,
) -> tuple[Change, MemoryItem]:
    """The change that moves ``item`` to its next version with ``fields`` replaced."""
    after = item.model_copy(update={"version": item.version + 1, **fields})
    expected = item.version if expected_version == -1 else expected_version
    change = Change(
        op=op,
        cube=item.cube,
        actor="alice",
        ts=T0 + timedelta(minutes=after.version),
        item_id=item.id,
        after=after,
        vector=vector,
        expected_version=expected,
        reason=reason,
    )
    return change, after


def check_chain(store: Store, cube: str) -> None:
    report = verify_chain(
        cube, store.events(cube), head=store.head(cube), items=store.iter_items(cube)
    )
    assert report.ok, report
    assert report.head_seq == store.head(cube)[0]


def state(store: Store) -> dict[str, Any]:
    """Everything observable through the protocol, for all-or-nothing checks."""
    out: dict[str, Any] = {}
    for info in store.list_cubes():
        items = list(store.iter_items(info.name))
        vectors = store.get_vectors([i.id for i in items])
        every_word = " ".join(item.text for item in items) or "nothing"
        out[info.name] = {
            "info": info,
            "head": store.head(info.name),
            "events": store.events(info.name),
            "items": items,
            "vectors": {k: v.tobytes() for k, v in sorted(vectors.items())},
            "keyword": store.keyword_search(info.name, every_word, 1000, ItemFilter()),
        }
    return out


def derived_entry(entry_id: str, cube: str, *sources: MemoryItem) -> DerivedEntry:
    return DerivedEntry(
        id=entry_id,
        cube=cube,
        kind="kv",
        blob="ab" * 32,
        size=10,
        sources=tuple(SourceRef(item_id=s.id, version=s.version) for s in sources),
        manifest={"any": "json"},
        created_at=T0,
    )


def build(entry: DerivedEntry) -> Change:
    return Change(op=EventOp.KV_BUILD, cube=entry.cube, actor="alice", ts=T0, derived=entry)


@contextlib.contextmanager
def handles(store: Store, n: int) -> Iterator[list[Store]]:
    """``n`` more handles on the store ``store`` is (as other processes would open it)."""
    with contextlib.ExitStack() as opened:
        yield [opened.enter_context(contextlib.closing(open_store(store.url))) for _ in range(n)]


def race(stores: Sequence[Store], call: Callable[[Store, int], Any]) -> list[Any]:
    """``call(stores[n], n)`` for every ``n`` at once, each in its own thread, released
    together; what each returned, or the exception it raised."""
    start = threading.Barrier(len(stores))
    outcomes: list[Any] = [None] * len(stores)

    def run(n: int) -> None:
        start.wait()
        try:
            outcomes[n] = call(stores[n], n)
        except MemosError as exc:  # what the contract says a call may raise
            outcomes[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
