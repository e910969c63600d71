"""Erasure (``forget``): a user's memories leave every tier and every place their bytes live,
the log still verifies, and the receipt checks against it; on every face and every store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _backends import FACES, clients
from _redis import REDIS_URL, prefix_of

from memos import ErasureReceipt, EventOp, HashEmbedder, MemOS
from memos.errors import AccessDenied, CubeNotFound, InvalidInput, ItemNotFound
from memos.llm import LocalModel

SECRETS = ["ZQXSECRET7731", "KAPPAVAULT0042"]
BOB = [
    f"bob keeps his locker code {SECRETS[0]} in the blue notebook",
    "bob moved to lisbon in may",
]
CAROL = ["carol moved to porto in june", "the capital of france is paris"]
FAST = {"max_steps": 4, "learning_rate": 0.01, "batch_size": 2, "recall_every": 4}


@pytest.fixture(params=FACES)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: LocalModel
) -> Iterator[tuple[MemOS, Any]]:
    handle = {"embedder": HashEmbedder(64), "model": tiny_model}
    with clients(request.param, tmp_path / "data", **handle) as (root, connect):
        yield root, connect("alice")


def _filled(sdk: Any) -> tuple[str, list[str], list[str]]:
    """A cube with bob's and carol's memories, a KV block and an adapter over both, an update
    of bob's (two versions), and searches and chats that count uses."""
    cube = sdk.create_cube("notes").name
    bob = [sdk.add(text, cube=cube, user="bob").id for text in BOB]
    carol = [sdk.add(text, cube=cube, user="carol").id for text in CAROL]
    sdk.update(bob[1], f"bob moved to lisbon in may, his pin is {SECRETS[1]}")
    sdk.kv.build(cube, [bob[0], carol[0]])
    sdk.kv.build(cube, carol)
    sdk.lora.consolidate(cube, [bob[0], carol[1]], name="facts", recipe=FAST, density=None)
    sdk.lora.consolidate(cube, carol, name="carol", recipe=FAST, density=None)
    sdk.search("locker code", cube=cube)
    sdk.chat("where is the locker code", cube=cube, max_new_tokens=2)
    return cube, bob, carol


def test_forget_erases_a_user_from_every_tier_and_the_receipt_verifies(
    world: tuple[MemOS, Any],
) -> None:
    root, sdk = world
    cube, bob, carol = _filled(sdk)
    before = {e.seq: e for e in sdk.log(cube)}
    receipt = sdk.forget(user="bob", cube=cube, reason="subject request 17")
    assert isinstance(receipt, ErasureReceipt)
    (part,) = receipt.cubes
    assert set(part.record.items) == set(bob)
    assert len(part.record.blocks) == 1
    assert len(part.record.adapters) == 1
    assert len(part.record.blobs) == 2  # the block's cache and the adapter's weights
    erased = {seq for seq, e in before.items() if e.item_id in bob}
    assert set(part.events) == erased
    assert len(erased) == 3
    # the log: the payloads are gone, the chain still verifies, the erase event says why
    log = {e.seq: e for e in sdk.log(cube)}
    assert all(log[seq].payload is None for seq in erased)
    assert log[part.seq].op == EventOp.ERASE
    assert log[part.seq].hash == part.hash
    assert sdk.verify(cube).ok
    assert sdk.verify(cube, receipt=part.digest).ok
    # every face of reading: nothing of bob's
    for query in ("locker code", SECRETS[0], SECRETS[1], "bob lisbon"):
        hits = sdk.search(query, cube=cube, k=10)
        assert {h.item.id for h in hits} <= set(carol)
    reply = sdk.chat("what is bob's locker code", cube=cube, max_new_tokens=2)
    assert {m.id for m in reply.memories} <= set(carol)
    assert [sorted(s.item_id for s in e.sources) for e in sdk.kv.list(cube)] == [sorted(carol)]
    assert [v.name for v in sdk.lora.list(cube)] == ["carol"]
    for item_id in bob:
        with pytest.raises(ItemNotFound):
            sdk.history(item_id)
    assert _leaks(root) == []


def test_the_scan_finds_what_was_not_forgotten(world: tuple[MemOS, Any]) -> None:
    root, sdk = world
    cube, _, _ = _filled(sdk)
    sdk.forget(user="carol", cube=cube)
    assert {leak.rsplit(": ", 1)[1] for leak in _leaks(root)} == set(SECRETS)


def _leaks(root: MemOS) -> list[str]:
    """Where the secrets are still found: every file of the data directory, every Redis key
    (name and value) of the store."""
    url = root.store.url
    found = []
    if url.startswith("sqlite:///"):
        for path in Path(url.removeprefix("sqlite:///")).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path.name}: {s}" for s in SECRETS if s.encode() in data]
        return found
    with redis.Redis.from_url(REDIS_URL) as client:
        for key in client.scan_iter(match=f"{prefix_of(url)}:*", count=1000):
            found += [f"{key!r}: {s}" for s in SECRETS if s.encode() in _value(client, key)]
    return found


def _value(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key)
    reads: dict[bytes, Any] = {
        b"string": lambda: [client.get(key)],
        b"hash": lambda: [x for kv in client.hgetall(key).items() for x in kv],
        b"set": lambda: list(client.smembers(key)),
        b"zset": lambda: client.zrange(key, 0, -1),
        b"list": lambda: client.lrange(key, 0, -1),
        b"stream": lambda: [
            x for _, fields in client.xrange(key) for kv in fields.items() for x in kv
        ],
    }
    parts = reads[kind]()
    return b"\0".join([key, *(p if isinstance(p, bytes) else str(p).encode() for p in parts)])


def test_only_an_owner_erases_and_only_from_its_cubes(world: tuple[MemOS, Any]) -> None:
    root, alice = world
    cube, _bob, _ = _filled(alice)
    root.create_cube("team", owner="carol")
    theirs = root.add(BOB[0], cube="team", user="bob")
    root.grant("team", "alice", "write")
    with pytest.raises(AccessDenied):
        alice.forget(user="bob", cube="team")
    with pytest.raises(CubeNotFound):
        alice.forget(user="bob", cube="nobody:nothing")
    receipt = alice.forget(user="bob")  # every cube alice owns: not carol's
    assert [part.cube for part in receipt.cubes] == [cube]
    assert root.get(theirs.id).text == BOB[0]
    assert root.verify("team").ok


def test_a_forget_is_refused_without_a_subject_and_changes_nothing_without_a_match(
    world: tuple[MemOS, Any],
) -> None:
    _, sdk = world
    cube = sdk.create_cube("notes").name
    sdk.add(CAROL[0], cube=cube, user="carol")
    head = sdk.log(cube)[-1].seq
    for bad in ({}, {"user": ""}, {"user": "bob", "adapters": "keep"}, {"where": {"a b": 1}}):
        with pytest.raises(InvalidInput):
            sdk.forget(cube=cube, **bad)
    assert sdk.forget(user="bob", cube=cube).cubes == ()
    assert sdk.log(cube)[-1].seq == head
    with pytest.raises(InvalidInput):
        sdk.verify(cube, receipt="not-a-digest")
    report = sdk.verify(cube, receipt="0" * 64)
    assert not report.ok
    assert "no erasure event" in (report.problem or "")


def test_forget_by_metadata_and_with_retrained_adapters(chat_mos: MemOS) -> None:
    mos = chat_mos
    mos.create_cube("notes")
    kept = mos.add_many(CAROL, cube="notes", metadata={"source": "wiki"})
    gone = mos.add(BOB[0], cube="notes", metadata={"source": "chat", "thread": 9})
    mos.lora.consolidate("notes", [gone.id, kept[0].id], name="facts", recipe=FAST, density=None)
    mos.lora.attach("notes", "facts")
    receipt = mos.forget(where={"source": "chat"}, cube="notes", adapters="retrain")
    (part,) = receipt.cubes
    assert part.record.items == (gone.id,)
    (retrained,) = mos.lora.list("notes")
    assert part.retrained == (retrained.id,)
    assert [s.item_id for s in retrained.sources] == [kept[0].id]
    assert not retrained.stale
    assert mos.get_cube("notes").default_adapter == "facts"
    assert mos.verify("notes", receipt=part.digest).ok


def test_forget_with_dampened_adapters_on_every_face(world: tuple[MemOS, Any]) -> None:
    _, sdk = world
    cube = sdk.create_cube("notes").name
    kept = [sdk.add(text, cube=cube, user="carol").id for text in CAROL]
    gone = sdk.add(BOB[0], cube=cube, user="bob").id
    before = sdk.lora.consolidate(cube, [gone, *kept], name="facts", recipe=FAST, density=None)
    sdk.lora.attach(cube, "facts")
    receipt = sdk.forget(user="bob", cube=cube, adapters="dampen")
    (part,) = receipt.cubes
    assert part.record.adapters == (before.id,)
    assert part.retrained == ()
    (dampened,) = sdk.lora.list(cube)
    assert part.dampened == (dampened.id,)
    assert dampened.manifest.origin == "dampen"
    assert dampened.manifest.storage == "fp32"
    assert [s.item_id for s in dampened.sources] == kept
    assert dampened.manifest.metrics["dampened"] > 0  # what SSD scaled down, recorded
    assert sdk.get_cube(cube).default_adapter == "facts"
    assert sdk.verify(cube, receipt=part.digest).ok
    assert sdk.chat("where does carol live", cube=cube, max_new_tokens=2).adapter == dampened.id


def test_dampening_an_adapter_with_no_source_left_reverts_it(chat_mos: MemOS) -> None:
    mos = chat_mos
    mos.create_cube("notes")
    bob = mos.add(BOB[0], cube="notes", user="bob")
    mos.lora.consolidate("notes", [bob.id], name="bob", recipe=FAST, density=None)
    receipt = mos.forget(user="bob", cube="notes", adapters="dampen")
    assert receipt.cubes[0].dampened == ()
    assert mos.lora.list("notes") == []


def test_reverting_leaves_an_older_version_and_detaches_an_adapter_left_with_none(
    chat_mos: MemOS,
) -> None:
    mos = chat_mos
    mos.create_cube("notes")
    carol = mos.add_many(CAROL, cube="notes", user="carol")
    bob = mos.add(BOB[0], cube="notes", user="bob")
    first = mos.lora.consolidate("notes", [carol[0].id], name="facts", recipe=FAST, density=None)
    mos.lora.consolidate("notes", [carol[0].id, bob.id], name="facts", recipe=FAST, density=None)
    mos.lora.consolidate("notes", [bob.id], name="bob", recipe=FAST, density=None)
    mos.lora.attach("notes", "bob")
    mos.forget(user="bob", cube="notes")
    assert [v.id for v in mos.lora.list("notes")] == [first.id]  # facts v1 never saw bob
    assert mos.get_cube("notes").default_adapter is None
    assert mos.verify("notes").ok


def test_access_statistics_and_jobs_forget_the_memories(tmp_path: Path) -> None:
    from memos.schedulers import Worker

    with MemOS.open(tmp_path / "data", embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes")
        bob = mos.add(BOB[1], cube="notes", user="bob")
        carol = mos.add(CAROL[0], cube="notes", user="carol")
        mos.search("moved to", cube="notes", k=2)
        mos._engine.uses.flush()
        assert set(mos.store.cube_access("notes")) == {bob.id, carol.id}
        job = mos.jobs.submit("notes", "reencode", {"codec": "fp16"}, reason=f"for {bob.id}")
        Worker(mos).run_once()
        mos.forget(user="bob", cube="notes")
        assert set(mos.store.cube_access("notes")) == {carol.id}
        assert mos.store.access_stats([bob.id]) == {}
        assert mos.store.co_access("notes") == {}
        scrubbed = mos.jobs.get(job.id)
        assert (scrubbed.params, scrubbed.reason, scrubbed.result) == ({}, None, {"erased": True})
        assert mos.verify("notes").ok


def test_an_erased_payload_without_an_erasure_is_tampering(mos: MemOS, data_dir: Path) -> None:
    mos.create_cube("notes")
    item = mos.add(BOB[0], cube="notes", user="bob")
    seq = mos.history(item.id)[0].event.seq
    with sqlite3.connect(data_dir / "memos.db") as conn:
        conn.execute("UPDATE payloads SET body = NULL WHERE seq = ?", (seq,))
    report = mos.verify("notes")
    assert (report.ok, report.first_bad_seq) == (False, seq)
    assert "no erasure names it" in (report.problem or "")


def test_an_erased_cube_exports_and_imports_and_still_verifies(mos: MemOS, tmp_path: Path) -> None:
    mos.create_cube("notes")
    mos.add(BOB[0], cube="notes", user="bob")
    mos.add(CAROL[0], cube="notes", user="carol")
    (part,) = mos.forget(user="bob").cubes
    mos.export_cube("notes", tmp_path / "out")
    assert not any(
        SECRETS[0].encode() in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )
    with MemOS.open(tmp_path / "other", embedder=HashEmbedder(64)) as other:
        other.import_cube(tmp_path / "out")
        assert other.verify("notes", receipt=part.digest).ok
        assert [h.item.text for h in other.search("moved", cube="notes")] == [CAROL[0]]


def test_the_operator_may_have_the_store_rewrite_its_files(world: tuple[MemOS, Any]) -> None:
    root, alice = world
    cube, _, _ = _filled(alice)
    with pytest.raises(AccessDenied):
        alice.forget(user="bob", cube=cube, rewrite=True)
    receipt = root.forget(user="bob", cube=cube, rewrite=True)
    assert receipt.files  # SQLite: VACUUM; this Redis keeps no files
    assert root.verify(cube).ok
    assert _leaks(root) == []
