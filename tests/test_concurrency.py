"""Two processes on one data dir: no lost update, a gapless verifying log, optimistic
concurrency with ``expected_version``, and each process's index catching up with the other's
writes through the log."""

from __future__ import annotations

import json
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _workers import HASH_DIM, LineReader, send, spawn

from memos import Change, EventOp, HashEmbedder, ItemStatus, Limits, MemOS
from memos.errors import Conflict, VersionConflict

CUBE = "shared"
ADDS_EACH = 100


def _open(data_dir: Path) -> MemOS:
    return MemOS.open(data_dir, embedder=HashEmbedder(HASH_DIM), limits=Limits(max_k=100_000))


def _assert_log_sound(mos: MemOS) -> list[int]:
    report = mos.verify(CUBE)
    assert report.ok, report
    seqs = [event.seq for event in mos.log(CUBE)]
    assert seqs == list(range(1, len(seqs) + 1))
    return seqs


@pytest.mark.slow
def test_two_writers_lose_no_update(data_dir: Path, tmp_path: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE)
        shared = mos.add("shared note, original", cube=CUBE)

    summaries: list[dict[str, Any]] = []
    with ExitStack() as stack:
        workers = []
        for tag in ("alpha", "beta"):
            stderr_path = tmp_path / f"{tag}.stderr"
            args = ("contender", str(data_dir), CUBE, shared.id, tag, str(ADDS_EACH))
            proc = stack.enter_context(spawn(*args, stderr_path=stderr_path, stdin=True))
            workers.append((proc, LineReader(proc, stderr_path)))
        for _, lines in workers:
            assert lines.wait_for(1)[0] == {"ready": True}
        # Both are open and waiting: start them together so their writes interleave.
        for proc, _ in workers:
            send(proc, {"go": True})
        for proc, lines in workers:
            summaries.append(lines.wait_for(2, timeout=300)[1])
            assert proc.wait(timeout=60) == 0, lines.stderr()

    updates = sum(s["updated"] for s in summaries)
    assert updates + sum(s["conflicts"] for s in summaries) == 2 * ADDS_EACH
    added = [item_id for s in summaries for item_id in s["added"]]
    assert len(set(added)) == 2 * ADDS_EACH

    with _open(data_dir) as mos:
        # Every successful update made exactly one version: none was lost or overwritten.
        final = mos.get(shared.id)
        assert final.version == 1 + updates
        assert [entry.version for entry in mos.history(shared.id)] == list(range(1, updates + 2))
        for item_id in added:
            assert mos.get(item_id).status == ItemStatus.ACTIVE
        seqs = _assert_log_sound(mos)
        # cube_create + the shared item + every add + every update, one event each.
        assert len(seqs) == 2 + 2 * ADDS_EACH + updates
        ops = Counter(event.op for event in mos.log(CUBE))
        assert ops[EventOp.UPDATE] == updates
        assert ops[EventOp.CREATE] == 1 + 2 * ADDS_EACH
        # Both writers' edits are in the shared item's history.
        authors = {e.item.text.split(",")[1].split()[0] for e in mos.history(shared.id)[1:]}
        assert authors == {"alpha", "beta"}
        # And the index holds every active item exactly once.
        hits = mos.search("adds memory", cube=CUBE, k=2 * ADDS_EACH + 1)
        assert {hit.item.id for hit in hits} == {*added, shared.id}


def test_stale_expected_version_conflicts_and_changes_nothing(mos: MemOS, cube: str) -> None:
    item = mos.add("first draft", cube=cube)
    mos.update(item.id, "second draft", expected_version=1)
    before_log = mos.log(cube)
    before_item = mos.get(item.id)

    for call in (
        lambda: mos.update(item.id, "stale edit", expected_version=1),
        lambda: mos.update(item.id, "future edit", expected_version=3),
        lambda: mos.delete(item.id, expected_version=1),
        lambda: mos.rollback(item.id, to_version=1, expected_version=1),
    ):
        with pytest.raises(VersionConflict) as caught:
            call()
        assert caught.value.status == 409
        assert caught.value.code == "version_conflict"
        assert caught.value.details["current"] == 2
    assert mos.log(cube) == before_log
    assert mos.get(item.id) == before_item
    assert {hit.item.text for hit in mos.search("draft", cube=cube, k=5)} == {"second draft"}

    assert mos.update(item.id, "third draft", expected_version=2).version == 3


def test_stale_expected_version_from_another_client(data_dir: Path, mos: MemOS, cube: str) -> None:
    """Two clients on one data dir (two SQLite connections, as two processes would have)."""
    item = mos.add("the shared fact", cube=cube)
    with _open(data_dir) as other:
        seen = other.get(item.id)
        mos.update(item.id, "changed by the first client", expected_version=seen.version)
        head = len(mos.log(cube))
        with pytest.raises(VersionConflict):
            other.update(item.id, "lost edit", expected_version=seen.version)
        assert len(other.log(cube)) == head
        assert other.get(item.id).text == "changed by the first client"


def test_store_checks_the_version_inside_its_transaction(mos: MemOS, cube: str) -> None:
    """A change that passed the facade's check but lost the race is refused by the store."""
    item = mos.add("raced", cube=cube)
    mos.update(item.id, "won the race")
    before = mos.log(cube)
    stale = Change(
        op=EventOp.UPDATE,
        cube=cube,
        actor="late",
        ts=datetime.now(UTC),
        item_id=item.id,
        after=item.model_copy(update={"version": 2, "text": "lost the race"}),
        expected_version=1,
    )
    with pytest.raises(VersionConflict):
        mos.store.commit([stale])
    assert mos.log(cube) == before
    # A batch is all or nothing: a good change before the stale one is rolled back too.
    other = mos.add("bystander", cube=cube)
    good = Change(
        op=EventOp.UPDATE,
        cube=cube,
        actor="late",
        ts=datetime.now(UTC),
        item_id=other.id,
        after=other.model_copy(update={"version": 2, "text": "bystander edited"}),
        expected_version=1,
    )
    before = mos.log(cube)
    with pytest.raises(Conflict):
        mos.store.commit([good, stale])
    assert mos.log(cube) == before
    assert mos.get(other.id) == other
    assert mos.get(item.id).text == "won the race"
    assert mos.verify(cube).ok


@pytest.mark.slow
def test_another_process_sees_our_writes_and_we_see_its(data_dir: Path, tmp_path: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE)
        ours = mos.add_many([f"parent memory {n} about cats" for n in range(5)], cube=CUBE)
        stderr_path = tmp_path / "reader.stderr"
        with spawn("reader", str(data_dir), CUBE, stderr_path=stderr_path, stdin=True) as proc:
            lines = LineReader(proc, stderr_path)
            lines.wait_for(1)
            # The reader builds its index now, then must catch up with what we write next.
            send(proc, {"query": "memory about cats", "k": 100})
            assert set(lines.wait_for(2)[1]["ids"]) == {item.id for item in ours}

            more = mos.add_many([f"parent memory {n} about dogs" for n in range(3)], cube=CUBE)
            mos.update(ours[0].id, "parent memory rewritten about birds")
            mos.delete(ours[1].id)
            send(proc, {"query": "memory about cats", "k": 100})
            answer = lines.wait_for(3)[2]
            expected = {item.id for item in [*ours[:1], *ours[2:], *more]}
            assert set(answer["ids"]) == expected
            assert "parent memory rewritten about birds" in answer["texts"]
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(timeout=60) == 0, lines.stderr()

        # The other way round: a writer process changes the cube under our open index.
        assert len(mos.search("memory", cube=CUBE, k=100)) == len(expected)
        script = json.dumps(
            [
                {"op": "add", "text": "child memory about lizards"},
                {"op": "update", "id": ours[2].id, "text": "child rewrote this about fish"},
                {"op": "delete", "id": ours[3].id},
            ]
        )
        stderr_path = tmp_path / "writer.stderr"
        with spawn("writer", str(data_dir), CUBE, script, stderr_path=stderr_path) as proc:
            acks = LineReader(proc, stderr_path).drain()
            assert proc.wait(timeout=60) == 0
        added_by_child = acks[0]["id"]
        hits = mos.search("memory about lizards", cube=CUBE, k=100)
        ids = {hit.item.id for hit in hits}
        assert ids == (expected - {ours[3].id}) | {added_by_child}
        assert hits[0].item.id == added_by_child
        texts = {hit.item.text for hit in hits}
        assert "child rewrote this about fish" in texts
        assert all(hit.item.status == ItemStatus.ACTIVE for hit in hits)
        _assert_log_sound(mos)
