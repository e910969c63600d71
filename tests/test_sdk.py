"""The embedded SDK, feature by feature, on a real SQLite data dir."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from memos import EventOp, HashEmbedder, ItemStatus, MemoryItem, MemOS


def one(result: MemoryItem) -> MemoryItem:
    assert isinstance(result, MemoryItem)
    return result


def test_add_records_text_user_tags_metadata_and_one_event(mos: MemOS, cube: str) -> None:
    item = one(
        mos.add(
            "Alice moved to Lisbon in May 2023",
            cube=cube,
            user="alice",
            tags=["travel"],
            metadata={"source": "chat", "session": "s1"},
        )
    )
    assert item.version == 1
    assert item.status == ItemStatus.ACTIVE
    assert item.tags == ("travel",)
    assert item.session == "s1"
    assert mos.get(item.id) == item
    events = mos.log(cube)
    assert [e.op for e in events] == [EventOp.CUBE_CREATE, EventOp.CREATE]
    assert events[-1].item_id == item.id
    assert events[-1].actor == "alice"
    assert events[-1].after == item


def test_add_chat_messages_stores_one_memory_per_message(mos: MemOS, cube: str) -> None:
    stamp = "2023-05-08T13:56:00+00:00"
    added = mos.add(
        [
            {"role": "user", "content": "I adopted a collie", "timestamp": stamp},
            {"role": "assistant", "content": "What is its name?"},
        ],
        cube=cube,
        user="alice",
        session="s7",
    )
    assert isinstance(added, list)
    assert [i.metadata["role"] for i in added] == ["user", "assistant"]
    assert all(i.session == "s7" for i in added)
    assert added[0].occurred_at == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)


def test_add_many_batches_and_reports_progress(mos: MemOS, cube: str) -> None:
    seen: list[int] = []
    added = mos.add_many(
        [f"memory number {n}" for n in range(25)], cube=cube, batch_size=10, progress=seen.append
    )
    assert len(added) == 25
    assert seen == [10, 10, 5]
    assert len(mos.log(cube)) == 26
    assert [i.text for i in added] == [f"memory number {n}" for n in range(25)]


def test_search_ranks_by_similarity_and_returns_scores(mos: MemOS, cube: str) -> None:
    mos.add_many(["the cat sat on the mat", "stock prices fell", "a cat chased a mouse"], cube=cube)
    hits = mos.search("cat", cube=cube, k=2)
    assert {h.item.text for h in hits} == {"the cat sat on the mat", "a cat chased a mouse"}
    assert hits[0].score >= hits[1].score


def test_search_filters_apply_before_top_k(mos: MemOS, cube: str) -> None:
    mos.add_many([f"weather note {n}" for n in range(30)], cube=cube, user="bob")
    mos.add(
        "weather is sunny",
        cube=cube,
        user="alice",
        tags=["sky", "daily"],
        session="s1",
        occurred_at="2023-01-05T00:00:00Z",
        metadata={"mood": "happy", "rank": 3},
    )
    only = {
        "user": {"user": "alice"},
        "tags": {"tags": ["sky", "daily"]},
        "session": {"session": "s1"},
        "time": {"since": "2023-01-01", "until": "2023-02-01"},
        "where": {"where": {"mood": "happy", "rank": 3}},
    }
    for name, flt in only.items():
        hits = mos.search("weather note", cube=cube, k=1, **flt)  # type: ignore[arg-type]
        assert [h.item.text for h in hits] == ["weather is sunny"], name
    assert mos.search("weather", cube=cube, k=5, tags=["sky", "missing"]) == []
    assert mos.search("weather", cube=cube, k=5, until="2000-01-01") == []


def test_deleted_items_leave_search_and_come_back_on_rollback(mos: MemOS, cube: str) -> None:
    item = one(mos.add("Alice moved to Lisbon", cube=cube))
    mos.delete(item.id, reason="user asked")
    assert mos.search("Lisbon", cube=cube, k=5) == []
    restored = mos.rollback(item.id, to_version=1, reason="mistake")
    assert restored.status == ItemStatus.ACTIVE
    assert restored.version == 3
    assert [h.item.id for h in mos.search("Lisbon", cube=cube, k=5)] == [item.id]


def test_update_history_diff_and_rollback(mos: MemOS, cube: str) -> None:
    item = one(mos.add("Alice moved to Lisbon in May 2023", cube=cube, user="alice"))
    mos.update(item.id, "Alice moved to Porto in June 2023", user="alice", expected_version=1)
    mos.delete(item.id, user="alice", reason="user asked")
    back = mos.rollback(item.id, to_version=1, user="alice", reason="bad edit")
    history = mos.history(item.id)
    assert [(h.version, h.event.op) for h in history] == [
        (1, EventOp.CREATE),
        (2, EventOp.UPDATE),
        (3, EventOp.DELETE),
        (4, EventOp.ROLLBACK),
    ]
    assert history[2].event.reason == "user asked"
    assert back.text == "Alice moved to Lisbon in May 2023"
    diff = mos.diff(item.id, 1, 2)
    assert [c.field for c in diff.changes] == ["text"]
    assert "-Alice moved to Lisbon in May 2023" in diff.text_diff
    assert "+Alice moved to Porto in June 2023" in diff.text_diff
    assert mos.diff(item.id, 1, 4).unchanged
    assert [h.item.text for h in mos.search("Lisbon May", cube=cube, k=1)] == [back.text]


def test_rollback_cube_restores_the_state_after_a_seq(mos: MemOS, cube: str) -> None:
    kept = one(mos.add("kept memory", cube=cube))
    seq = mos.log(cube)[-1].seq
    mos.update(kept.id, "kept memory, edited")
    later = one(mos.add("added later", cube=cube))
    before = len(mos.log(cube))
    changed = mos.rollback_cube(cube, to_seq=seq, reason="undo the afternoon")
    assert {i.id for i in changed} == {kept.id, later.id}
    assert mos.get(kept.id).text == "kept memory"
    assert mos.get(later.id).status == ItemStatus.DELETED
    events = mos.log(cube)
    assert len(events) == before + 2
    assert all(e.op == EventOp.ROLLBACK and e.payload for e in events[-2:])
    assert mos.verify(cube).ok
    assert mos.rollback_cube(cube, to_seq=seq) == []


def test_log_limit_keeps_the_newest(mos: MemOS, cube: str) -> None:
    mos.add_many(["a", "b", "c"], cube=cube)
    assert [e.seq for e in mos.log(cube, limit=2)] == [3, 4]
    assert [e.seq for e in mos.log(cube, after_seq=2)] == [3, 4]


def test_cubes_are_listed_and_verified_together(mos: MemOS) -> None:
    mos.create_cube("one", owner="alice")
    mos.create_cube("two", owner="bob")
    mos.add("x", cube="two")
    assert [c.name for c in mos.list_cubes()] == ["one", "two"]
    assert mos.get_cube("two").owner == "bob"
    assert [(r.cube, r.ok) for r in mos.verify_all()] == [("one", True), ("two", True)]


def test_state_and_search_survive_reopening(data_dir: Path) -> None:
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as first:
        first.create_cube("notes", owner="alice")
        first.add_many([f"fact {n} about topic {n % 7}" for n in range(50)], cube="notes")
        expected = first.search("topic 3", cube="notes", k=10)
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as second:
        assert second.search("topic 3", cube="notes", k=10) == expected
        assert second.verify("notes").ok


def test_a_cube_remembers_its_embedder(mos: MemOS) -> None:
    info = mos.create_cube("small", embedder="hash-32")
    assert (info.embedder, info.dim, info.codec) == ("hash-32", 32, "fp32")
    mos.add("hello world", cube="small")
    assert mos.search("hello", cube="small", k=1)[0].item.text == "hello world"


@pytest.mark.slow
def test_real_embedder_end_to_end(tmp_path: Path) -> None:
    with MemOS.open(tmp_path / "data") as real:
        info = real.create_cube("alice-notes", owner="alice")
        assert (info.embedder, info.dim) == ("all-MiniLM-L6-v2", 384)
        real.add_many(
            [
                "Alice moved to Lisbon in May 2023",
                "Bob's favourite food is ramen",
                "The quarterly report is due on Friday",
            ],
            cube="alice-notes",
            user="alice",
        )
        hits = real.search("Which city does Alice live in?", cube="alice-notes", k=3)
        assert hits[0].item.text == "Alice moved to Lisbon in May 2023"
        assert hits[0].score > hits[1].score
