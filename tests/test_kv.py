"""The activation tier (KV caches of memory blocks) and chat over it, on a real SQLite data dir
and a real (tiny, random) Llama: a cached answer is token-for-token the recomputed one, a
stored cache is never written to, it is dropped in the same commit as a change to any of its
sources, it is refused by any other model, and its smaller storage dtypes decode closely."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from _models import WORDS, tiny_model_dir

from memos import EventOp, HashEmbedder, MemoryItem, MemOS
from memos.activation import KVEntry, cache_from_bytes, render_block
from memos.core._access import DEFAULT_HALF_LIFE_S, accessed, decayed_frequency
from memos.core._derived import KV_KIND
from memos.core._store import Change
from memos.core._types import AccessStats, DerivedEntry, SourceRef
from memos.errors import (
    Conflict,
    CubeNotFound,
    InvalidInput,
    ItemNotFound,
    KVEntryNotFound,
    ModelMismatch,
    VersionConflict,
)
from memos.llm import KV, LocalModel, ModelFingerprint, ModelShape, ResidentPrefix, SplitPrompt

FACTS = [
    "alice moved to lisbon in may",
    "the capital of france is paris",
    "alice moved to porto in june",
    "paris is where alice moved in june",
]
QUESTIONS = [
    "where is alice",
    "what is the capital of france",
    "where did alice move in may",
    "porto lisbon paris",
    "june",
]


@dataclass(frozen=True)
class Notes:
    mos: MemOS
    cube: str
    items: list[MemoryItem]
    data_dir: Path


@pytest.fixture
def notes(chat_mos: MemOS, data_dir: Path) -> Notes:
    chat_mos.create_cube("notes", owner="alice")
    items = chat_mos.add_many(FACTS, cube="notes", user="alice")
    return Notes(chat_mos, "notes", items, data_dir)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    """A tiny model of the same shape and tokenizer as ``tiny_model``, other weights."""
    root = tmp_path_factory.mktemp("other-model")
    return LocalModel.load(tiny_model_dir(root, seed=1), cache_dir=root / "cache")


def ids(items: Sequence[MemoryItem]) -> list[str]:
    return [i.id for i in items]


def blob_path(data_dir: Path, entry: KVEntry) -> Path:
    return data_dir / "blobs" / f"{entry.blob}.safetensors"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def blobs(data_dir: Path) -> set[str]:
    folder = data_dir / "blobs"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def stored_layers(notes: Notes, entry: KVEntry) -> list[KV]:
    """The fp32 layers the entry's blob decodes to."""
    data = blob_path(notes.data_dir, entry).read_bytes()
    token_ids, layers = cache_from_bytes(data, entry.manifest)
    assert tuple(token_ids) == notes.mos.model().split_prompt(block_text(notes, entry), "").prefix
    return layers


def block_text(notes: Notes, entry: KVEntry) -> str:
    return render_block([notes.mos.get(s.item_id) for s in entry.sources])


def tensor_bytes(blob: bytes) -> int:
    """The size of a safetensors file's data section (everything after its header)."""
    header: int = struct.unpack("<Q", blob[:8])[0]
    return len(blob) - 8 - header


# exactness ------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [[0, 1, 2, 3], [3, 1], [2], [1, 3, 0]])
def test_cached_and_recomputed_chats_give_identical_tokens(
    chat_mos: MemOS, order: list[int]
) -> None:
    """With an fp32 cube, a chat that reads a stored block's cache answers token for token
    what a chat recomputing the same prompt answers, for several blocks and questions."""
    cube = "block-" + "".join(map(str, order))
    chat_mos.create_cube(cube)
    added = chat_mos.add_many([FACTS[n] for n in order], cube=cube)
    block = [added[n] for n in reversed(range(len(added)))]  # not the retrieval order
    entry = chat_mos.kv.build(cube, ids(block))
    assert entry.manifest.dtype == "fp32"
    for question in QUESTIONS:
        cached = chat_mos.chat(question, cube=cube, k=len(order), max_new_tokens=24)
        full = chat_mos.chat(question, cube=cube, k=len(order), max_new_tokens=24, use_kv=False)
        assert cached.tokens == full.tokens, question
        assert cached.answer == full.answer
        assert len(cached.tokens) > 0
        assert cached.kv_entry == entry.id
        assert cached.cached_tokens == entry.tokens
        assert full.kv_entry == entry.id  # the same block's prompt, recomputed
        assert full.cached_tokens == 0
        assert cached.prompt_tokens == full.prompt_tokens > entry.tokens
        assert ids(cached.memories) == ids(full.memories) == ids(block)


@pytest.mark.parametrize(
    ("system", "question"),
    [
        ("alice moved to lisbon in may", "where is alice"),
        ("the capital of france is paris", "what is the capital of france"),
        ("paris porto lisbon", "may june"),
        ("", "alice"),
    ],
)
def test_generation_from_a_resident_prefix_equals_a_full_generation(
    tiny_model: LocalModel, system: str, question: str
) -> None:
    """``generate(ids, prefix=ResidentPrefix(prefix_ids, prefill(prefix_ids)))`` is exactly
    ``generate(ids)``, and stays so when the prefix is reused."""
    prompt = tiny_model.split_prompt(system, question)
    full = tiny_model.generate(prompt.ids, max_new_tokens=32)
    prefix = ResidentPrefix(prompt.prefix, tiny_model.prefill(prompt.prefix))
    assert tiny_model.generate(prompt.ids, max_new_tokens=32, prefix=prefix) == full
    assert tiny_model.generate(prompt.ids, max_new_tokens=32, prefix=prefix) == full
    assert tiny_model.generate(prompt.ids, max_new_tokens=5, prefix=prefix) == full[:5]


def test_a_wrong_prefix_cache_changes_the_answer(tiny_model: LocalModel) -> None:
    """The exactness checks can fail: keys and values of other tokens under the right token
    ids give another answer (so identical answers do mean the cache was right)."""
    prompt = tiny_model.split_prompt("alice moved to lisbon in may", "where is alice")
    other = tiny_model.split_prompt("june june june june june june june", "where is alice")
    wrong = ResidentPrefix(prompt.prefix, tiny_model.prefill(other.prefix[: len(prompt.prefix)]))
    full = tiny_model.generate(prompt.ids, max_new_tokens=32)
    assert tiny_model.generate(prompt.ids, max_new_tokens=32, prefix=wrong) != full


def test_a_prefix_of_other_tokens_is_refused(tiny_model: LocalModel) -> None:
    """A prompt must start with the prefix's own token ids, and go past them."""
    prompt = tiny_model.split_prompt("alice moved to lisbon", "where")
    prefix = ResidentPrefix(prompt.prefix, tiny_model.prefill(prompt.prefix))
    other = tiny_model.split_prompt("alice moved to porto", "where")
    with pytest.raises(InvalidInput):
        tiny_model.generate(other.ids, prefix=prefix)
    with pytest.raises(InvalidInput):
        tiny_model.generate(prompt.prefix, prefix=prefix)


# immutability (invariant 6) -------------------------------------------------------------


def test_many_chats_leave_the_stored_and_resident_cache_unchanged(notes: Notes) -> None:
    """After 30 chats over a block (varied questions and lengths), its blob's bytes and the
    resident prefix's bytes are what the build produced, and still decode to a fresh
    prefill of the block."""
    mos = notes.mos
    entry = mos.kv.build(notes.cube, ids(notes.items))
    path = blob_path(notes.data_dir, entry)
    assert sha256_file(path) == entry.blob
    resident = mos.kv.load(entry)
    before = resident.digest()
    rng = random.Random(6)
    for n in range(30):
        question = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
        reply = mos.chat(question, cube=notes.cube, k=4, max_new_tokens=1 + n * 7 % 24)
        assert reply.kv_entry == entry.id
        assert reply.cached_tokens == entry.tokens
    assert sha256_file(path) == entry.blob
    assert mos.kv.load(entry) is resident
    assert resident.digest() == before
    fresh = mos.model().prefill(resident.token_ids)
    for (keys, values), (fresh_keys, fresh_values) in zip(resident.layers, fresh, strict=True):
        assert torch.equal(keys, fresh_keys)
        assert torch.equal(values, fresh_values)


def test_a_resident_prefix_grows_its_room_and_keeps_its_prefix(tiny_model: LocalModel) -> None:
    """A generation needing more than the buffers hold grows them (the prefix positions
    copied unchanged); later ones reuse that room and still match full generations."""
    prompt = tiny_model.split_prompt("alice moved to lisbon in may", "where is alice")
    layers = tiny_model.prefill(prompt.prefix)
    prefix = ResidentPrefix(prompt.prefix, layers)
    start_bytes, digest = prefix.nbytes, prefix.digest()
    assert start_bytes == sum(k.nbytes + v.nbytes for k, v in layers)
    short = tiny_model.generate(prompt.ids, max_new_tokens=4, prefix=prefix)
    grown = prefix.nbytes
    assert grown > start_bytes
    assert prefix.digest() == digest
    longer = tiny_model.generate(prompt.ids, max_new_tokens=200, prefix=prefix)
    assert prefix.nbytes == grown  # the room grew by a whole step the first time
    assert prefix.digest() == digest
    for (keys, values), (orig_keys, orig_values) in zip(prefix.layers, layers, strict=True):
        assert torch.equal(keys, orig_keys)
        assert torch.equal(values, orig_values)
    assert longer == tiny_model.generate(prompt.ids, max_new_tokens=200)
    assert short == longer[:4]
    assert tiny_model.generate(prompt.ids, max_new_tokens=4, prefix=prefix) == short


# covering -------------------------------------------------------------------------------


def test_the_smallest_block_covering_the_retrieved_memories_is_used(notes: Notes) -> None:
    """Chat uses the smallest stored block holding every retrieved memory; its memories go
    into the prompt in the block's order; a smaller block missing one of them is not used."""
    mos, cube = notes.mos, notes.cube
    question = "where is alice"
    retrieved = [h.item for h in mos.search(question, cube=cube, k=2)]
    rest = [i for i in notes.items if i.id not in ids(retrieved)]
    big = mos.kv.build(cube, ids(notes.items))
    small = mos.kv.build(cube, [retrieved[1].id, retrieved[0].id, rest[0].id])
    partial = mos.kv.build(cube, [retrieved[0].id])
    assert partial.tokens < small.tokens < big.tokens
    reply = mos.chat(question, cube=cube, k=2, max_new_tokens=8)
    assert reply.kv_entry == small.id
    assert reply.cached_tokens == small.tokens
    assert ids(reply.memories) == [s.item_id for s in small.sources]
    assert mos.kv.covering(cube, retrieved) == small
    mos.kv.drop(cube, small.id)
    reply = mos.chat(question, cube=cube, k=2, max_new_tokens=8)
    assert reply.kv_entry == big.id
    assert ids(reply.memories) == [s.item_id for s in big.sources]


def test_a_block_holding_some_retrieved_memories_starts_the_prompt(
    notes: Notes, tiny_model: LocalModel
) -> None:
    """When no block holds all retrieved memories, the block holding most of them starts the
    prompt (its memories, its order), the retrieved ones it lacks follow in rank order, and only
    those and the question are prefilled: the tokens are the recomputed prompt's."""
    mos, cube = notes.mos, notes.cube
    question = "what is the capital of france"
    retrieved = [h.item for h in mos.search(question, cube=cube, k=3)]
    left_out = next(i for i in notes.items if i.id not in ids(retrieved))
    mos.kv.build(cube, [retrieved[2].id])  # holds fewer of them
    block = mos.kv.build(cube, [retrieved[1].id, left_out.id, retrieved[2].id])
    assert mos.kv.covering(cube, retrieved) is None
    reply = mos.chat(question, cube=cube, k=3, max_new_tokens=16)
    assert reply.kv_entry == block.id
    assert reply.cached_tokens == block.tokens
    expected = [retrieved[1], left_out, retrieved[2], retrieved[0]]
    assert ids(reply.memories) == ids(expected)
    system = render_block(expected)
    prompt = tiny_model.split_prompt(system, question, cached=len(render_block(expected[:3])))
    assert prompt.prefix == tuple(mos.kv.load(block).token_ids)
    assert reply.prompt_tokens == len(prompt.ids) > reply.cached_tokens
    assert reply.tokens == tuple(tiny_model.generate(prompt.ids, max_new_tokens=16))
    recomputed = mos.chat(question, cube=cube, k=3, max_new_tokens=16, use_kv=False)
    assert (recomputed.tokens, recomputed.cached_tokens) == (reply.tokens, 0)
    assert ids(recomputed.memories) == ids(expected)


def test_a_callers_system_instructions_follow_the_memories_and_keep_the_block_a_prefix(
    notes: Notes, tiny_model: LocalModel
) -> None:
    mos, cube = notes.mos, notes.cube
    question, system = "where is alice", "answer with the month"
    block = mos.kv.build(cube, [h.item.id for h in mos.search(question, cube=cube, k=2)])
    cached = mos.chat(question, cube=cube, k=2, max_new_tokens=8, system=system)
    full = mos.chat(question, cube=cube, k=2, max_new_tokens=8, system=system, use_kv=False)
    assert (cached.kv_entry, cached.cached_tokens) == (block.id, block.tokens)
    assert cached.tokens == full.tokens
    prompt = tiny_model.split_prompt(f"{render_block(cached.memories)}\n\n{system}", question)
    assert cached.prompt_tokens == len(prompt.ids)
    assert cached.tokens == tuple(tiny_model.generate(prompt.ids, max_new_tokens=8))
    without = mos.chat(question, cube=cube, k=2, max_new_tokens=8)
    assert without.prompt_tokens < cached.prompt_tokens
    # no memory in the prompt: the caller's instructions are the whole system message
    bare = mos.chat(question, cube=cube, retrieve=False, system=system, max_new_tokens=8)
    alone = tiny_model.split_prompt(system, question)
    assert bare.tokens == tuple(tiny_model.generate(alone.ids, max_new_tokens=8))
    assert bare.memories == ()


def test_earlier_turns_follow_the_cached_system_message_and_retrieval_ignores_them(
    notes: Notes, tiny_model: LocalModel
) -> None:
    mos, cube = notes.mos, notes.cube
    question = "where is alice"
    history = [
        {"role": "user", "content": "what is the capital of france"},
        {"role": "assistant", "content": "paris"},
    ]
    block = mos.kv.build(cube, [h.item.id for h in mos.search(question, cube=cube, k=2)])
    cached = mos.chat(question, cube=cube, k=2, max_new_tokens=8, history=history)
    full = mos.chat(question, cube=cube, k=2, max_new_tokens=8, history=history, use_kv=False)
    assert (cached.kv_entry, cached.cached_tokens) == (block.id, block.tokens)
    assert cached.tokens == full.tokens
    prompt = tiny_model.split_prompt(render_block(cached.memories), question, history=history)
    assert cached.prompt_tokens == len(prompt.ids)
    assert cached.tokens == tuple(tiny_model.generate(prompt.ids, max_new_tokens=8))
    alone = mos.chat(question, cube=cube, k=2, max_new_tokens=8)
    assert alone.prompt_tokens < cached.prompt_tokens
    assert alone.retrieved == cached.retrieved  # searched for the question alone


@pytest.mark.parametrize(
    "history",
    [
        "user: hello",
        [{"role": "system", "content": "obey"}],
        [{"role": "user"}],
        [{"role": "user", "content": 7}],
        [{"role": "user", "content": "a\x00b"}],
        [{"role": "user", "content": "hi", "name": "x"}],
        [{"role": "user", "content": "hi"}] * 1001,
    ],
)
def test_bad_history_is_refused(notes: Notes, history: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        notes.mos.chat("where is alice", cube=notes.cube, history=history)
    assert refused.value.details["field"] == "history"


@pytest.mark.parametrize("system", ["bad\x00", "x" * 10_000_000, 7, "\ud800"])
def test_bad_system_instructions_are_refused(notes: Notes, system: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        notes.mos.chat("where is alice", cube=notes.cube, system=system)
    assert refused.value.details["field"] == "system"


def test_partial_blocks_answer_as_recomputed_over_many_prompts(notes: Notes) -> None:
    """Every mix of blocks and questions: a cached run and a recomputed one of the same prompt
    give the same tokens, and the cache serves exactly the block's tokens."""
    mos, cube = notes.mos, notes.cube
    for first, second in itertools.combinations(notes.items, 2):
        block = mos.kv.build(cube, [first.id, second.id])
        for question in QUESTIONS:
            for k in (1, 2, 3):
                cached = mos.chat(question, cube=cube, k=k, max_new_tokens=6)
                full = mos.chat(question, cube=cube, k=k, max_new_tokens=6, use_kv=False)
                assert cached.tokens == full.tokens, (question, k)
                assert cached.memories == full.memories
                if cached.kv_entry == block.id:
                    assert cached.cached_tokens == block.tokens
        mos.kv.drop(cube, block.id)


# extending --------------------------------------------------------------------------------


def test_prefill_after_a_resident_prefix_is_the_full_prefill(tiny_model: LocalModel) -> None:
    """``prefill(ids, prefix=...)`` reads the prefix's cache as it is and computes the rest:
    the same keys and values as a prefill from position 0, to float rounding."""
    short = tiny_model.split_prompt(render_block([]) + "alice moved to lisbon", "").prefix
    long = tiny_model.split_prompt(render_block([]) + "alice moved to lisbon in may", "").prefix
    assert long[: len(short) - 1] == short[:-1]
    base = tuple(long[: len(short) - 1])
    prefix = ResidentPrefix(base, tiny_model.prefill(base))
    continued = tiny_model.prefill(long, prefix=prefix)
    for (keys, values), (full_keys, full_values) in zip(
        continued, tiny_model.prefill(long), strict=True
    ):
        assert keys.shape == full_keys.shape
        assert torch.allclose(keys, full_keys, atol=1e-5)
        assert torch.allclose(values, full_values, atol=1e-5)
    with pytest.raises(InvalidInput):
        tiny_model.prefill(base, prefix=prefix)  # nothing after the prefix
    with pytest.raises(InvalidInput):
        tiny_model.prefill(tuple(reversed(long)), prefix=prefix)  # other tokens


@pytest.mark.parametrize(
    ("stored", "built", "shared"),
    [([0, 1], [0, 1, 2, 3], 2), ([0, 1, 2], [0, 1, 3], 2)],
    ids=["all-its-memories", "its-first-memories"],
)
def test_a_block_that_begins_with_a_stored_ones_memories_computes_only_the_rest(
    notes: Notes, stored: list[int], built: list[int], shared: int
) -> None:
    """A block that starts with all of a stored block's memories, or with its first ones,
    continues the cache of them (the start of a causal model's cache is the cache of the
    start): its event names the block and the tokens computed, its cache is the full
    prefill's to float rounding, and chats over it answer as recomputed ones."""
    mos, cube, items = notes.mos, notes.cube, notes.items
    base = mos.kv.build(cube, [items[n].id for n in stored])
    block = mos.kv.build(cube, [items[n].id for n in built])
    event = mos.log(cube)[-1]
    assert event.payload["extends"] == base.id
    head = mos.model().split_prompt(render_block(items[:shared]), "").prefix
    assert event.payload["prefilled"] == block.tokens - len(head) > 0
    fresh = mos.model().prefill(mos.kv.load(block).token_ids)
    for (keys, values), (want_keys, want_values) in zip(
        stored_layers(notes, block), fresh, strict=True
    ):
        assert torch.allclose(keys, want_keys, atol=1e-5)
        assert torch.allclose(values, want_values, atol=1e-5)
    mos.kv.drop(cube, base.id)
    for question in QUESTIONS:
        cached = mos.chat(question, cube=cube, k=2, max_new_tokens=12)
        full = mos.chat(question, cube=cube, k=2, max_new_tokens=12, use_kv=False)
        assert cached.kv_entry == block.id
        assert cached.tokens == full.tokens, question


def test_only_a_stored_block_of_the_same_memories_versions_and_dtype_is_continued(
    notes: Notes,
) -> None:
    """Another order, another storage dtype, or a block of memories the new one does not begin
    with: the block is computed from position 0 (no ``extends``)."""
    mos, cube, items = notes.mos, notes.cube, notes.items
    mos.kv.build(cube, ids(items[:2]), dtype="int8")
    mos.kv.build(cube, [items[1].id, items[0].id])
    mos.kv.build(cube, ids(items[2:]))
    mos.kv.build(cube, ids(items))
    assert "extends" not in mos.log(cube)[-1].payload
    int8 = mos.kv.build(cube, ids(items[:3]), dtype="int8")
    event = mos.log(cube)[-1]
    assert event.payload["extends"] != int8.id
    assert mos.kv.get(cube, event.payload["extends"]).manifest.dtype == "int8"


def test_a_block_of_older_versions_does_not_cover(notes: Notes) -> None:
    """Covering compares item versions: a block of another version of a memory is not
    offered for it (whatever the store did with it)."""
    mos = notes.mos
    entry = mos.kv.build(notes.cube, ids(notes.items[:2]))
    newer = notes.items[0].model_copy(update={"version": 2})
    assert mos.kv.covering(notes.cube, [notes.items[1]]) == entry
    assert mos.kv.covering(notes.cube, [newer]) is None


# invalidation (invariant 4) -------------------------------------------------------------


def _update(mos: MemOS, item: MemoryItem) -> None:
    mos.update(item.id, "alice moved to paris in june")


def _delete(mos: MemOS, item: MemoryItem) -> None:
    mos.delete(item.id, reason="user asked")


def _rollback(mos: MemOS, item: MemoryItem) -> None:
    mos.rollback(item.id, to_version=1)


def _rollback_cube(mos: MemOS, item: MemoryItem) -> None:
    # back to before the item's last update: it gets its first text back as a new version
    update = next(e for e in reversed(mos.log(item.cube)) if e.item_id == item.id)
    mos.rollback_cube(item.cube, to_seq=update.seq - 1)


@pytest.mark.parametrize(
    "change",
    [_update, _delete, _rollback, _rollback_cube],
    ids=["update", "delete", "rollback", "rollback-cube"],
)
def test_a_change_to_a_source_drops_its_blocks_in_the_same_commit(
    notes: Notes, change: Callable[[MemOS, MemoryItem], None]
) -> None:
    """Each way an item gets a new version drops every block built from its older version
    right after the item's event, with a reason naming it; other blocks stay; the cube
    still verifies."""
    mos, cube = notes.mos, notes.cube
    source, other = notes.items[0], notes.items[2]
    if change in (_rollback, _rollback_cube):
        mos.update(source.id, "alice moved to lisbon in june")  # v2, to roll back from
    current = mos.get(source.id)
    with_source = mos.kv.build(cube, [current.id, notes.items[1].id])
    alone = mos.kv.build(cube, [current.id])
    without = mos.kv.build(cube, [other.id, notes.items[1].id])
    head = mos.log(cube)[-1].seq
    change(mos, current)
    after = mos.log(cube, after_seq=head)
    assert [(e.op, e.item_id) for e in after] == [
        (after[0].op, source.id),
        (EventOp.KV_DROP, None),
        (EventOp.KV_DROP, None),
    ]
    assert after[0].op in (EventOp.UPDATE, EventOp.DELETE, EventOp.ROLLBACK)
    assert [e.payload["dropped"] for e in after[1:] if e.payload] == [with_source.id, alone.id]
    for drop in after[1:]:
        assert drop.reason is not None
        assert source.id in drop.reason
        assert f"v{current.version}" in drop.reason
        assert drop.ts == after[0].ts
        assert drop.actor == after[0].actor
    assert [e.id for e in mos.kv.list(cube)] == [without.id]
    assert mos.verify(cube).ok
    reply = mos.chat("where is alice", cube=cube, k=4, max_new_tokens=4)
    assert reply.kv_entry == without.id  # the block that is left, holding two of the four


def test_a_cube_rollback_that_deletes_a_source_drops_its_blocks(notes: Notes) -> None:
    """A cube rollback to before an item existed deletes it, and its blocks go with it."""
    mos, cube = notes.mos, notes.cube
    seq = mos.log(cube)[-1].seq
    late = mos.add("alice moved to porto", cube=cube)
    assert isinstance(late, MemoryItem)
    entry = mos.kv.build(cube, [late.id, notes.items[0].id])
    kept = mos.kv.build(cube, [notes.items[0].id])
    mos.rollback_cube(cube, to_seq=seq)
    log = mos.log(cube)
    assert (log[-2].op, log[-2].item_id) == (EventOp.ROLLBACK, late.id)
    assert log[-1].op == EventOp.KV_DROP
    assert log[-1].payload is not None
    assert log[-1].payload["dropped"] == entry.id
    assert log[-1].reason is not None
    assert late.id in log[-1].reason
    assert "deleted" in log[-1].reason
    assert [e.id for e in mos.kv.list(cube)] == [kept.id]
    assert mos.verify(cube).ok


def test_a_drop_is_an_event_and_leaves_the_cube_verifying(notes: Notes) -> None:
    """``kv.drop`` writes one ``kv_drop`` event with the reason given; the entry is gone."""
    mos, cube = notes.mos, notes.cube
    entry = mos.kv.build(cube, ids(notes.items[:2]), user="alice", reason="warm up")
    built = mos.log(cube)[-1]
    assert (built.op, built.actor, built.reason) == (EventOp.KV_BUILD, "alice", "warm up")
    event = mos.kv.drop(cube, entry.id, user="bob", reason="not needed")
    assert (event.op, event.actor, event.reason) == (EventOp.KV_DROP, "bob", "not needed")
    assert mos.log(cube)[-1] == event
    assert mos.kv.list(cube) == []
    with pytest.raises(KVEntryNotFound):
        mos.kv.get(cube, entry.id)
    assert mos.verify(cube).ok


def test_a_build_from_stale_sources_is_refused_and_writes_nothing(notes: Notes) -> None:
    """The store refuses a ``kv_build`` whose sources are not the items' current active
    versions (a build that raced a change), with VersionConflict, and writes nothing."""
    mos, cube = notes.mos, notes.cube
    entry = mos.kv.build(cube, ids(notes.items[:2]))
    mos.update(notes.items[0].id, "alice moved to porto in may")
    mos.delete(notes.items[1].id)
    log, standing = mos.log(cube), mos.store.derived_entries(cube)
    for stale in ([notes.items[0]], [notes.items[1]], [notes.items[2], notes.items[0]]):
        derived = DerivedEntry(
            id=f"kv-stale-{len(stale)}-{stale[0].id[:6]}",
            cube=cube,
            kind=KV_KIND,
            blob=entry.blob,
            size=entry.size,
            sources=tuple(SourceRef(item_id=i.id, version=i.version) for i in stale),
            manifest=entry.manifest.model_dump(mode="json"),
            created_at=datetime.now(UTC),
        )
        change = Change(
            op=EventOp.KV_BUILD, cube=cube, actor="local", ts=derived.created_at, derived=derived
        )
        with pytest.raises(VersionConflict):
            mos.store.commit([change])
    assert mos.log(cube) == log
    assert mos.store.derived_entries(cube) == standing == []
    assert mos.verify(cube).ok


class RacingModel:
    """The tiny model, with a write to the store slipped in while a block is being prefilled
    (a concurrent writer, deterministically)."""

    def __init__(self, model: LocalModel) -> None:
        self._model = model
        self.name: str = model.name
        self.fingerprint: ModelFingerprint = model.fingerprint
        self.shape: ModelShape = model.shape
        self.during_prefill: Callable[[], None] = lambda: None

    def split_prompt(self, system: str, user: str, *, cached: int | None = None) -> SplitPrompt:
        return self._model.split_prompt(system, user, cached=cached)

    def template_sha256(self) -> str:
        return self._model.template_sha256()

    def prefill(self, ids: Sequence[int], *, prefix: ResidentPrefix | None = None) -> list[KV]:
        self.during_prefill()
        return self._model.prefill(ids, prefix=prefix)

    def stream(
        self, ids: Sequence[int], *, max_new_tokens: int = 64, prefix: ResidentPrefix | None = None
    ) -> Iterator[int]:
        return self._model.stream(ids, max_new_tokens=max_new_tokens, prefix=prefix)

    def decode(self, ids: Sequence[int]) -> str:
        return self._model.decode(ids)


@pytest.mark.parametrize("write", ["update", "delete"])
def test_a_build_racing_a_change_to_its_sources_is_refused(
    tmp_path: Path, tiny_model: LocalModel, write: str
) -> None:
    """A source changed between reading the items and committing the build: the build is
    refused with VersionConflict and no entry or event is left (only the change)."""
    racing = RacingModel(tiny_model)
    with MemOS.open(tmp_path / "race", embedder=HashEmbedder(64), model=racing) as mos:
        mos.create_cube("notes")
        items = mos.add_many(FACTS[:2], cube="notes")

        def change() -> None:
            racing.during_prefill = lambda: None
            if write == "update":
                mos.update(items[0].id, "alice moved to porto")
            else:
                mos.delete(items[0].id)

        racing.during_prefill = change
        with pytest.raises(VersionConflict):
            mos.kv.build("notes", ids(items))
        assert [e.op for e in mos.log("notes")][-1] in (EventOp.UPDATE, EventOp.DELETE)
        assert EventOp.KV_BUILD not in [e.op for e in mos.log("notes")]
        assert mos.kv.list("notes") == []
        assert mos.verify("notes").ok


# model identity (invariant 5) -----------------------------------------------------------


def test_a_cache_of_another_model_is_refused_and_not_used(
    notes: Notes, other_model: LocalModel
) -> None:
    """A block built by one model is refused (ModelMismatch) by a MemOS running another
    model of the same shape, whose chat ignores it and computes its answer in full."""
    entry = notes.mos.kv.build(notes.cube, ids(notes.items))
    assert other_model.fingerprint != notes.mos.model().fingerprint
    assert other_model.shape == notes.mos.model().shape
    question = "where is alice"
    with MemOS.open(notes.data_dir, embedder=HashEmbedder(64), model=other_model) as other:
        assert other.kv.list(notes.cube) == [entry]
        with pytest.raises(ModelMismatch) as raised:
            other.kv.load(entry)
        assert raised.value.status == 409
        assert other.kv.covering(notes.cube, notes.items) is None
        reply = other.chat(question, cube=notes.cube, k=4, max_new_tokens=24)
        assert reply.kv_entry is None
        assert reply.cached_tokens == 0
        retrieved = [h.item for h in other.search(question, cube=notes.cube, k=4)]
        prompt = other_model.split_prompt(render_block(retrieved), question)
        assert reply.tokens == tuple(other_model.generate(prompt.ids, max_new_tokens=24))
        assert other.kv.resident() == {}
    # the model that built it still uses it
    assert notes.mos.chat(question, cube=notes.cube, k=4).kv_entry == entry.id


# storage dtypes -------------------------------------------------------------------------


def test_bf16_and_int8_caches_are_smaller_and_decode_close_to_fp32(notes: Notes) -> None:
    """The same block stored as bf16 (cube setting) and int8 (build argument) holds
    exactly the layout's bytes: half of fp32 for bf16, a byte per value plus KIVI scales
    for int8; decoded, bf16 is within 1% of fp32 and int8 within 2% of each channel's
    (keys) or token's (values) range."""
    mos = notes.mos
    mos.create_cube("halves", kv_dtype="bf16")
    halves = mos.add_many(FACTS, cube="halves")
    # the same rendered block in both cubes (same texts and dates): same tokens
    fp32 = mos.kv.build(notes.cube, ids(notes.items))
    bf16 = mos.kv.build("halves", ids(halves))
    int8 = mos.kv.build(notes.cube, ids(notes.items), dtype="int8")
    assert (fp32.manifest.dtype, bf16.manifest.dtype, int8.manifest.dtype) == (
        "fp32",
        "bf16",
        "int8",
    )
    assert fp32.manifest.token_sha256 == bf16.manifest.token_sha256 == int8.manifest.token_sha256
    shape, tokens = mos.model().shape, fp32.tokens
    values = shape.layers * 2 * shape.kv_heads * tokens * shape.head_dim
    # fp16 scale and min: keys per channel for each group of 32 tokens, values per token
    key_groups = -(-tokens // 32)
    stats = shape.layers * 2 * 2 * shape.kv_heads * (shape.head_dim * key_groups + tokens)
    sizes = {
        e.manifest.dtype: tensor_bytes(blob_path(notes.data_dir, e).read_bytes())
        for e in (fp32, bf16, int8)
    }
    assert sizes == {
        "fp32": 8 * tokens + 4 * values,
        "bf16": 8 * tokens + 2 * values,
        "int8": 8 * tokens + values + stats,
    }
    assert fp32.size / bf16.size > 1.8
    assert fp32.size / int8.size > 2.0  # >= 3.5 needs a real head_dim: see the slow test
    reference = stored_layers(notes, fp32)
    for (keys, vals), (ref_keys, ref_vals) in zip(
        stored_layers(notes, bf16), reference, strict=True
    ):
        for got, want in ((keys, ref_keys), (vals, ref_vals)):
            assert got.dtype == torch.float32
            assert bool(((got - want).abs() <= 1e-2 * want.abs()).all())
    for (keys, vals), (ref_keys, ref_vals) in zip(
        stored_layers(notes, int8), reference, strict=True
    ):
        # keys: a range per channel (over tokens); values: a range per token (over channels)
        key_range = ref_keys.amax(dim=2, keepdim=True) - ref_keys.amin(dim=2, keepdim=True)
        val_range = ref_vals.amax(dim=3, keepdim=True) - ref_vals.amin(dim=3, keepdim=True)
        assert bool(((keys - ref_keys).abs() <= 0.02 * key_range + 1e-6).all())
        assert bool(((vals - ref_vals).abs() <= 0.02 * val_range + 1e-6).all())
        assert not torch.equal(keys, ref_keys)
    mos.kv.drop(notes.cube, fp32.id)  # else the older of two equal blocks is used
    for entry, cube in ((bf16, "halves"), (int8, notes.cube)):
        reply = mos.chat("where is alice", cube=cube, k=4, max_new_tokens=8)
        assert reply.kv_entry == entry.id
        assert reply.cached_tokens == entry.tokens


def test_a_resident_cache_is_the_stored_one_whatever_its_dtype(notes: Notes) -> None:
    """Right after a build, the resident prefix is the decoded blob (an int8 cache is used
    as it will load later), not the fp32 prefill it was made from."""
    mos = notes.mos
    entry = mos.kv.build(notes.cube, ids(notes.items), dtype="int8")
    resident = mos.kv.load(entry)
    for (keys, values), (want_keys, want_values) in zip(
        resident.layers, stored_layers(notes, entry), strict=True
    ):
        assert torch.equal(keys, want_keys)
        assert torch.equal(values, want_values)


def test_a_bad_storage_dtype_is_refused_and_writes_nothing(notes: Notes) -> None:
    """An unknown dtype, for a build or a cube, is InvalidInput; no event, no blob, no cube."""
    mos = notes.mos
    log, stored, cubes = mos.log(notes.cube), blobs(notes.data_dir), mos.list_cubes()
    for dtype in ("fp16", "FP32", "int4", 8):
        with pytest.raises(InvalidInput):
            mos.kv.build(notes.cube, ids(notes.items), dtype=dtype)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            mos.create_cube(f"cube-{dtype}", kv_dtype=dtype)  # type: ignore[arg-type]
    assert mos.log(notes.cube) == log
    assert blobs(notes.data_dir) == stored
    assert mos.list_cubes() == cubes
    assert mos.kv.list(notes.cube) == []


# API errors -----------------------------------------------------------------------------


@pytest.fixture
def seeded(notes: Notes) -> Notes:
    """Notes with a deleted memory and a second cube."""
    mos = notes.mos
    gone = mos.add("alice moved to lisbon", cube=notes.cube)
    assert isinstance(gone, MemoryItem)
    mos.delete(gone.id)
    mos.create_cube("other")
    mos.add("the capital of france is paris", cube="other")
    return Notes(mos, notes.cube, [*notes.items, gone], notes.data_dir)


def _other_cube_item(n: Notes) -> str:
    return next(iter(n.mos.store.iter_items("other"))).id


BAD_BUILDS: dict[str, tuple[Callable[[Notes], Any], type[Exception]]] = {
    "both-ids-and-query": (
        lambda n: n.mos.kv.build(n.cube, [n.items[0].id], query="alice"),
        InvalidInput,
    ),
    "neither-ids-nor-query": (lambda n: n.mos.kv.build(n.cube), InvalidInput),
    "empty-list": (lambda n: n.mos.kv.build(n.cube, []), InvalidInput),
    "a-string": (lambda n: n.mos.kv.build(n.cube, n.items[0].id), InvalidInput),
    "duplicate-ids": (
        lambda n: n.mos.kv.build(n.cube, [n.items[0].id, n.items[1].id, n.items[0].id]),
        InvalidInput,
    ),
    "non-str-id": (lambda n: n.mos.kv.build(n.cube, [n.items[0].id, 7]), InvalidInput),  # type: ignore[list-item]
    "unhashable-id": (lambda n: n.mos.kv.build(n.cube, [[n.items[0].id]]), InvalidInput),  # type: ignore[list-item]
    "unknown-id": (lambda n: n.mos.kv.build(n.cube, [n.items[0].id, "0" * 32]), ItemNotFound),
    "deleted-item": (lambda n: n.mos.kv.build(n.cube, [n.items[-1].id]), Conflict),
    "item-of-another-cube": (
        lambda n: n.mos.kv.build(n.cube, [n.items[0].id, _other_cube_item(n)]),
        ItemNotFound,
    ),
    "unknown-cube": (lambda n: n.mos.kv.build("nope", [n.items[0].id]), CubeNotFound),
    "query-k-zero": (lambda n: n.mos.kv.build(n.cube, query="alice", k=0), InvalidInput),
    "query-empty": (lambda n: n.mos.kv.build(n.cube, query=" "), InvalidInput),
    "bad-reason": (lambda n: n.mos.kv.build(n.cube, [n.items[0].id], reason=5), InvalidInput),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD_BUILDS))
def test_bad_builds_raise_typed_errors_and_write_nothing(seeded: Notes, case: str) -> None:
    """Each bad build raises its typed error; no event, entry or blob is written."""
    call, error = BAD_BUILDS[case]
    mos = seeded.mos
    before = {c.name: mos.log(c.name) for c in mos.list_cubes()}
    stored = blobs(seeded.data_dir)
    with pytest.raises(error):
        call(seeded)
    assert {c.name: mos.log(c.name) for c in mos.list_cubes()} == before
    assert blobs(seeded.data_dir) == stored
    assert mos.kv.list(seeded.cube) == []


def test_a_block_too_long_for_the_model_is_refused(notes: Notes) -> None:
    """A block that leaves the model no room for a question is InvalidInput, unwritten."""
    mos = notes.mos
    many = ids(mos.add_many([f"alice moved to lisbon {n}" for n in range(30)], cube=notes.cube))
    log, stored = mos.log(notes.cube), blobs(notes.data_dir)
    with pytest.raises(InvalidInput, match="no room"):
        mos.kv.build(notes.cube, many)
    assert mos.log(notes.cube) == log
    assert blobs(notes.data_dir) == stored
    assert mos.kv.build(notes.cube, many[:8]).tokens < 192


def test_unknown_entries_and_cubes_are_not_found(notes: Notes) -> None:
    """drop/get of an unknown entry id: KVEntryNotFound (404); list/get/drop on an unknown
    cube: CubeNotFound; an entry of another cube is not found through this one."""
    mos = notes.mos
    mos.create_cube("other")
    entry = mos.kv.build(notes.cube, ids(notes.items[:1]))
    log = mos.log(notes.cube)
    with pytest.raises(KVEntryNotFound) as raised:
        mos.kv.drop(notes.cube, "kv-nope")
    assert raised.value.status == 404
    with pytest.raises(KVEntryNotFound):
        mos.kv.get(notes.cube, "kv-nope")
    with pytest.raises(KVEntryNotFound):
        mos.kv.drop("other", entry.id)
    for call in (
        lambda: mos.kv.list("nope"),
        lambda: mos.kv.get("nope", entry.id),
        lambda: mos.kv.drop("nope", entry.id),
    ):
        with pytest.raises(CubeNotFound):
            call()
    assert mos.log(notes.cube) == log
    assert mos.kv.get(notes.cube, entry.id) == entry


# access statistics ----------------------------------------------------------------------


def test_chat_counts_one_access_per_memory_used(notes: Notes) -> None:
    """Each chat records one use of each memory in its prompt, and none of the others (its
    own retrieval is not a second use); the search that found them was one use too."""
    mos = notes.mos
    question = "where is alice"
    used = ids([h.item for h in mos.search(question, cube=notes.cube, k=2)])
    unused = [i for i in ids(notes.items) if i not in used]
    assert set(mos.access_stats(ids(notes.items))) == set(used)
    for n in range(1, 4):
        reply = mos.chat(question, cube=notes.cube, k=2, max_new_tokens=2)
        assert ids(reply.memories) == used
        stats = mos.access_stats(ids(notes.items))
        assert set(stats) == set(used)
        for item_id in used:
            assert stats[item_id].count == n + 1
            assert stats[item_id].last_access is not None
            assert 0 < stats[item_id].frequency <= n + 1
    assert all(i not in mos.access_stats(unused) for i in unused)
    with pytest.raises(InvalidInput):
        mos.access_stats(used[0])


def test_access_frequency_decays_by_half_per_half_life() -> None:
    """The frequency grows by one per use and halves with each half-life without one."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    half_life = DEFAULT_HALF_LIFE_S
    never = AccessStats(item_id="a")
    assert decayed_frequency(never, t0, half_life) == 0.0
    once = accessed(never, t0, half_life)
    assert (once.count, once.last_access, once.frequency) == (1, t0, 1.0)
    later = t0 + timedelta(seconds=half_life)
    assert decayed_frequency(once, later, half_life) == pytest.approx(0.5)
    assert decayed_frequency(once, t0 + timedelta(seconds=3 * half_life), half_life) == (
        pytest.approx(0.125)
    )
    assert decayed_frequency(once, t0 - timedelta(days=1), half_life) == 1.0
    twice = accessed(once, later, half_life)
    assert (twice.count, twice.last_access) == (2, later)
    assert twice.frequency == pytest.approx(1.5)
    daily = never
    for day in range(60):
        daily = accessed(daily, t0 + timedelta(days=day), half_life)
    assert daily.count == 60
    assert 9.5 < daily.frequency < 11


# streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("use_kv", [True, False])
def test_a_streamed_chat_is_the_chat(notes: Notes, use_kv: bool) -> None:
    """The pieces of a streamed chat join into the chat's answer; ``.reply`` is the
    chat's reply, and is only readable once the stream is exhausted."""
    mos = notes.mos
    mos.kv.build(notes.cube, ids(notes.items))
    question = "what is the capital of france"
    stream = mos.chat_stream(question, cube=notes.cube, k=4, max_new_tokens=20, use_kv=use_kv)
    with pytest.raises(RuntimeError):
        _ = stream.reply
    pieces = list(stream)
    reply = mos.chat(question, cube=notes.cube, k=4, max_new_tokens=20, use_kv=use_kv)
    assert all(pieces)
    assert "".join(pieces) == reply.answer == stream.reply.answer
    assert stream.reply == reply
    assert (reply.cached_tokens > 0) == use_kv


def test_a_partly_read_stream_has_no_reply(notes: Notes) -> None:
    """A stream read only part way has no reply yet (and counts no access)."""
    mos = notes.mos
    stream = mos.chat_stream("where is alice", cube=notes.cube, k=2, max_new_tokens=20)
    pieces = iter(stream)
    next(pieces)
    with pytest.raises(RuntimeError):
        _ = stream.reply
    pieces.close()  # type: ignore[attr-defined]
    assert mos.access_stats(ids(notes.items)) == {}


# building from a query ------------------------------------------------------------------


def test_a_block_built_from_a_query_holds_the_search_results_in_rank_order(
    notes: Notes,
) -> None:
    """``kv.build(query=..., k=...)`` holds the k best memories for the query, best first,
    and a chat retrieving the same memories uses it."""
    mos = notes.mos
    question = "alice moved to porto in june"
    entry = mos.kv.build(notes.cube, query=question, k=3)
    ranked = ids([h.item for h in mos.search(question, cube=notes.cube, k=3)])
    assert [s.item_id for s in entry.sources] == ranked
    assert [s.version for s in entry.sources] == [1, 1, 1]
    assert entry.tokens == len(mos.model().split_prompt(block_text(notes, entry), "").prefix)
    reply = mos.chat(question, cube=notes.cube, k=3, max_new_tokens=4)
    assert reply.kv_entry == entry.id
    assert ids(reply.memories) == ranked


def test_a_manifest_records_the_model_sources_and_tokens(notes: Notes) -> None:
    """An entry's manifest names the model (fingerprint and shape), the templates, the
    source versions and a hash of its token ids; ``kv.list`` returns the entry as built."""
    mos = notes.mos
    model = mos.model()
    entry = mos.kv.build(notes.cube, ids(notes.items[:2]))
    manifest = entry.manifest
    assert manifest.model == model.fingerprint
    shape = model.shape
    assert (manifest.layers, manifest.kv_heads, manifest.head_dim) == (
        shape.layers,
        shape.kv_heads,
        shape.head_dim,
    )
    prefix = model.split_prompt(block_text(notes, entry), "").prefix
    assert manifest.tokens == len(prefix) == entry.tokens
    digest = hashlib.sha256(json.dumps(list(prefix)).encode()).hexdigest()
    assert manifest.token_sha256 == digest
    assert manifest.template_version.endswith(model.template_sha256()[:16])
    assert entry.sources == tuple(SourceRef(item_id=i.id, version=1) for i in notes.items[:2])
    assert entry.size == blob_path(notes.data_dir, entry).stat().st_size
    assert mos.kv.list(notes.cube) == [entry]
    assert mos.kv.get(notes.cube, entry.id) == entry


# the real model -------------------------------------------------------------------------

CITY_FACTS = [
    "Alice moved to Lisbon in May 2023.",
    "Bob's favourite food is ramen.",
    "The team meeting is every Tuesday at 10am.",
    "Carol adopted a border collie named Pixel.",
    "Dave is learning to play the cello.",
    "Erin's sister lives in Toronto.",
]


@pytest.fixture
def smol_mos(tmp_path: Path, smollm2: LocalModel) -> Iterator[MemOS]:
    with MemOS.open(tmp_path / "smol", embedder=HashEmbedder(64), model=smollm2) as mos:
        yield mos


@pytest.mark.slow
def test_smollm2_answers_the_same_from_its_cached_block(smol_mos: MemOS) -> None:
    """On SmolLM2, a question answerable from one fact gets the same tokens with and
    without the stored cache, and the answer names the fact's city."""
    smol_mos.create_cube("facts")
    items = smol_mos.add_many(CITY_FACTS, cube="facts")
    entry = smol_mos.kv.build("facts", ids(items))
    question = "Which city did Alice move to?"
    k = len(items)
    cached = smol_mos.chat(question, cube="facts", k=k, max_new_tokens=24)
    full = smol_mos.chat(question, cube="facts", k=k, max_new_tokens=24, use_kv=False)
    assert cached.kv_entry == entry.id
    assert cached.cached_tokens == entry.tokens > 0
    assert cached.tokens == full.tokens
    assert "Lisbon" in cached.answer


@pytest.mark.slow
def test_smollm2_partial_blocks_answer_as_recomputed(smol_mos: MemOS) -> None:
    """On SmolLM2, blocks holding some of the retrieved facts start the prompt, the other facts
    follow it, and each cached answer has the recomputed one's tokens."""
    smol_mos.create_cube("facts")
    items = smol_mos.add_many(CITY_FACTS, cube="facts")
    smol_mos.kv.build("facts", ids(items[:2]))
    smol_mos.kv.build("facts", ids(items[3:5]))
    questions = [
        "Which city did Alice move to?", "What is Bob's favourite food?",
        "When is the team meeting?", "What is the name of Carol's dog?",
        "Which instrument is Dave learning?", "Where does Erin's sister live?",
    ]  # fmt: skip
    used = set()
    for question in questions:
        cached = smol_mos.chat(question, cube="facts", k=3, max_new_tokens=12)
        full = smol_mos.chat(question, cube="facts", k=3, max_new_tokens=12, use_kv=False)
        assert cached.tokens == full.tokens, question
        assert 0 < cached.cached_tokens < cached.prompt_tokens == full.prompt_tokens
        used.add(cached.kv_entry)
    assert len(used) == 2


@pytest.mark.slow
def test_smollm2_int8_and_bf16_caches_are_small_and_answer_alike(smol_mos: MemOS) -> None:
    """On SmolLM2's shape, an int8 block is at least 3.5x smaller than fp32 and a bf16 one
    about half; answers from the int8 cache agree with the fp32 ones on at least 90% of
    24 greedy tokens."""
    smol_mos.create_cube("facts")
    items = smol_mos.add_many(CITY_FACTS, cube="facts")
    fp32 = smol_mos.kv.build("facts", ids(items))
    bf16 = smol_mos.kv.build("facts", ids(items), dtype="bf16")
    int8 = smol_mos.kv.build("facts", ids(items), dtype="int8")
    assert 1.9 < fp32.size / bf16.size <= 2.0
    assert fp32.size / int8.size >= 3.5
    question = "Which city did Alice move to?"
    full = smol_mos.chat(question, cube="facts", k=len(items), max_new_tokens=24, use_kv=False)
    assert "Lisbon" in full.answer
    smol_mos.kv.drop("facts", fp32.id)
    smol_mos.kv.drop("facts", bf16.id)
    quantised = smol_mos.chat(question, cube="facts", k=len(items), max_new_tokens=24)
    assert quantised.kv_entry == int8.id
    assert quantised.cached_tokens == int8.tokens
    same = sum(a == b for a, b in zip(quantised.tokens, full.tokens, strict=False))
    agreement = same / max(len(full.tokens), len(quantised.tokens))
    assert quantised.tokens == full.tokens or agreement >= 0.9, (agreement, quantised.answer)
    assert "Lisbon" in quantised.answer


def test_interleaved_streams_over_one_block_neither_block_nor_mix(chat_mos: MemOS) -> None:
    """A second stream opened while the first is unfinished gets its own copy of the prefix:
    it does not wait (no deadlock in one thread), and both answers equal the sequential ones."""
    chat_mos.create_cube("streams")
    a = chat_mos.add("alice moved to lisbon in may", cube="streams")
    b = chat_mos.add("the capital of france is paris", cube="streams")
    entry = chat_mos.kv.build("streams", [a.id, b.id])
    prefix = chat_mos.kv.load(entry)
    before = prefix.digest()
    questions = ("where is alice", "what is the capital of france")
    expected = [chat_mos.chat(q, cube="streams", k=2, max_new_tokens=12) for q in questions]
    first, second = (
        iter(chat_mos.chat_stream(q, cube="streams", k=2, max_new_tokens=12)) for q in questions
    )
    pieces: list[list[str]] = [[], []]
    open_streams = {0: first, 1: second}
    while open_streams:  # one piece of each in turn
        for n, stream in list(open_streams.items()):
            piece = next(stream, None)
            if piece is None:
                del open_streams[n]
            else:
                pieces[n].append(piece)
    assert ["".join(p) for p in pieces] == [r.answer for r in expected]
    assert prefix.digest() == before
