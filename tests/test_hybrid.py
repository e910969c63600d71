"""Hybrid retrieval: keyword search (SQLite FTS5), dense search, and their rank fusion.

Logic tests run MemOS over a real SQLite data dir with the deterministic ``HashEmbedder``;
the check on a LoCoMo-shaped conversation (``slow``, made up for the tests: ``tests/data``) uses
the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _locomo_sample import samples as chat_samples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memos.stores import _fts5
from numpy.typing import NDArray

from memos import HashEmbedder, ItemFilter, ItemStatus, MemOS, MiniLMEmbedder
from memos.errors import InvalidInput, VersionConflict
from memos.plaintext._search import CANDIDATE_MIN, DENSE_WEIGHT, KEYWORD_WEIGHT, RRF_K, fuse

MODES = ("dense", "keyword", "hybrid")
CHAT = "chat-1"  # the made-up conversation the retrieval check asks about


def ids_of(hits: list[Any]) -> list[str]:
    return [hit.item.id for hit in hits]


def keyword_table_rows(data_dir: Path, cube: str) -> int:
    with sqlite3.connect(data_dir / "memos.db") as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {_fts5.table_name(cube)}").fetchone()
    conn.close()
    return int(count)


# exact rare tokens --------------------------------------------------------------------------------


INVOICE = (
    "On Friday we finally settled the overdue cleaning bill for the Lisbon office after three "
    "reminders; the reference was INV-2291 and the receipt went to accounting."
)
PERSON = (
    "After the long conference we ended up at the harbour restaurant, where Xiomara "
    "Okonkwo-Baptiste told stories about her sailing trip until midnight."
)


@pytest.fixture
def look_alikes(mos: MemOS, cube: str) -> dict[str, str]:
    """Two long memories each holding one rare token, among 220 short look-alikes (other
    invoice numbers, similar names); text -> id."""
    numbers = [n for n in [*range(2200, 2400), 1291, 3291, 4291] if n != 2291]
    names = ["Xiomaro", "Siomara", "Xiomarra", "Xiomar", "Okonkwa", "Baptista"]
    texts = [f"Invoice INV-{n}" for n in numbers]
    texts += [f"{how} {name}" for name in names for how in ("Dinner with", "Call", "Met")]
    texts += [INVOICE, PERSON]
    return {item.text: item.id for item in mos.add_many(texts, cube=cube)}


@pytest.mark.parametrize(
    ("query", "wanted"),
    [("INV-2291", INVOICE), ("which invoice was 2291?", INVOICE), ("inv 2291", INVOICE),
     ("Xiomara", PERSON), ("Who is Xiomara?", PERSON)],
)  # fmt: skip
def test_keyword_finds_rare_tokens_that_dense_misses(
    mos: MemOS, cube: str, look_alikes: dict[str, str], query: str, wanted: str
) -> None:
    target = look_alikes[wanted]
    # hashed words and trigrams put the short look-alikes closer than the long memory
    assert target not in ids_of(mos.search(query, cube=cube, k=3, mode="dense"))
    assert ids_of(mos.search(query, cube=cube, k=3, mode="keyword"))[0] == target
    # "inv" is in nearly every memory: a keyword hit on it alone carries no weight, so
    # look-alikes that dense search ranks high do not outrank the one real keyword match
    assert ids_of(mos.search(query, cube=cube, k=3, mode="hybrid"))[0] == target


def test_keyword_stems_and_folds_diacritics(mos: MemOS, cube: str) -> None:
    painted = mos.add("Melanie painted a sunrise last summer", cube=cube)
    cafe = mos.add("Zoë opened a café in Porto", cube=cube)
    mos.add_many(["nothing to see here", "another unrelated memory"], cube=cube)

    def top(query: str) -> str:
        return ids_of(mos.search(query, cube=cube, k=1, mode="keyword"))[0]

    assert top("When did Melanie paint?") == painted.id
    assert top("paintings") == painted.id
    assert top("zoe's CAFE") == cafe.id


# scores per mode ----------------------------------------------------------------------------------


def test_scores_per_mode(mos: MemOS, cube: str) -> None:
    texts = ["green tea with lemon", "black coffee", "a walk in the park", "tea ceremony"]
    texts += ["rainy afternoon", "reading a novel", "a bike ride", "cooking pasta"]
    added = mos.add_many(texts, cube=cube)
    query = "green tea"

    dense = mos.search(query, cube=cube, k=8, mode="dense")
    vectors = HashEmbedder(64).embed([query, *texts])
    cosine = {item.id: float(vectors[0] @ vectors[i + 1]) for i, item in enumerate(added)}
    for hit in dense:
        assert hit.score == pytest.approx(cosine[hit.item.id], abs=1e-5)

    keyword = mos.search(query, cube=cube, k=4, mode="keyword")
    assert [hit.item.text for hit in keyword] == ["green tea with lemon", "tea ceremony"]
    assert all(hit.score > 0 for hit in keyword)
    assert keyword[0].score > keyword[1].score

    hybrid = mos.search(query, cube=cube, k=8, mode="hybrid")
    assert len(hybrid) == 8
    dense_rank = {hit.item.id: n for n, hit in enumerate(dense, 1)}
    keyword_rank = {hit.item.id: n for n, hit in enumerate(keyword, 1)}
    for hit in hybrid:
        expected = DENSE_WEIGHT / (RRF_K + dense_rank[hit.item.id])
        if hit.item.id in keyword_rank:
            expected += KEYWORD_WEIGHT / (RRF_K + keyword_rank[hit.item.id])
        assert hit.score == pytest.approx(expected)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)
    assert hybrid[0].item.text == "green tea with lemon"
    # hybrid is the default
    assert mos.search(query, cube=cube, k=8) == hybrid


@pytest.mark.parametrize("mode", ["sparse", "Dense", "", None, 3, ["dense"]])
def test_bad_mode_is_invalid_input(mos: MemOS, cube: str, mode: Any) -> None:
    mos.add("something", cube=cube)
    with pytest.raises(InvalidInput) as caught:
        mos.search("something", cube=cube, mode=mode)
    assert caught.value.details.get("field") == "mode"


# fusion -------------------------------------------------------------------------------------------


def test_rrf_fusion_order() -> None:
    fused = fuse([["a", "b", "c"], ["c", "a", "d"]], k_rrf=60)
    assert [item_id for item_id, _ in fused] == ["a", "c", "b", "d"]
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)


def test_rrf_weights_and_k() -> None:
    # equal weights: first in one list and second in the other, both ways, is a tie;
    # ties go to the better best rank, then the earlier list
    assert [i for i, _ in fuse([["a", "b"], ["b", "a"]])] == ["a", "b"]
    assert [i for i, _ in fuse([["a", "b"], ["b", "a"]], weights=[0.5, 1.0])] == ["b", "a"]
    assert [i for i, _ in fuse([["x"], ["y"]])] == ["x", "y"]
    # small k_rrf: first place in one list beats 30th place in both; large k: the reverse
    one = [f"d{n}" for n in range(29)] + ["both"]
    other = ["top", *[f"e{n}" for n in range(28)], "both"]
    assert fuse([one, other], k_rrf=10)[0][0] == "d0"
    assert fuse([one, other], k_rrf=60)[0][0] == "both"
    ((only, score),) = fuse([["only"]])
    assert only == "only"
    assert score == pytest.approx(1 / (RRF_K + 1))
    assert fuse([[], []]) == []
    assert fuse([]) == []
    with pytest.raises(ValueError, match="one weight per ranking"):
        fuse([["a"]], weights=[1.0, 2.0])


# filters inside every retriever -------------------------------------------------------------------

KEEP = {
    "user": "alice",
    "tags": ["keep"],
    "metadata": {"src": "keep"},
    "session": "s-keep",
    "occurred_at": "2024-06-01T10:00:00Z",
}
NOISE = {
    "user": "bob",
    "tags": ["noise"],
    "metadata": {"src": "noise"},
    "session": "s-noise",
    "occurred_at": "2020-01-01T10:00:00Z",
}
FILTERS: dict[str, dict[str, Any]] = {
    "user": {"user": "alice"},
    "tags": {"tags": ["keep"]},
    "session": {"session": "s-keep"},
    "since": {"since": "2024-01-01"},
    "until": {"since": "2024-06-01", "until": "2024-06-02"},
    "where": {"where": {"src": "keep"}},
}


@pytest.fixture
def decoys(mos: MemOS, cube: str) -> set[str]:
    """300 memories that match the query well and fail every filter, and 3 that match it
    less well and pass every filter; the ids of the three."""
    noise = [
        {"text": f"project budget meeting notes, budget meeting {n} for the project", **NOISE}
        for n in range(300)
    ]
    keep = [{"text": f"a draft plan for the project, part {n}", **KEEP} for n in range(3)]
    records = noise[:150] + keep + noise[150:]
    return {item.id for item in mos.add_many(records, cube=cube) if item.user == "alice"}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("flt", sorted(FILTERS))
def test_filters_apply_inside_each_mode(
    mos: MemOS, cube: str, decoys: set[str], mode: str, flt: str
) -> None:
    query = "project budget meeting"
    # the three are nowhere near the top without the filter, so filtering a top-k after the
    # fact would find none of them
    unfiltered = ids_of(mos.search(query, cube=cube, k=CANDIDATE_MIN, mode=mode))
    assert not decoys & set(unfiltered)
    found = mos.search(query, cube=cube, k=3, mode=mode, **FILTERS[flt])
    assert set(ids_of(found)) == decoys
    assert mos.search(query, cube=cube, k=10, mode=mode, **FILTERS[flt])[3:] == []


# deleted, restored, and consistency through every write path --------------------------------------


def test_deleted_items_never_come_back_and_restore_brings_them(
    mos: MemOS, cube: str, data_dir: Path
) -> None:
    item = mos.add("the spare key is under the blue flowerpot", cube=cube)
    mos.add_many([f"unrelated memory {n}" for n in range(20)], cube=cube)
    for mode in MODES:
        assert ids_of(mos.search("flowerpot", cube=cube, k=1, mode=mode)) == [item.id]
    mos.delete(item.id)
    for mode in ("keyword", "hybrid"):
        assert item.id not in ids_of(mos.search("flowerpot key", cube=cube, k=50, mode=mode))
    assert mos.store.keyword_search(cube, "flowerpot", 10, ItemFilter()) == []
    assert keyword_table_rows(data_dir, cube) == 20
    mos.rollback(item.id, to_version=1)
    assert ids_of(mos.search("flowerpot", cube=cube, k=1, mode="keyword")) == [item.id]
    assert keyword_table_rows(data_dir, cube) == 21
    # and the whole cube rolled back to before it was added
    mos.rollback_cube(cube, to_seq=1)
    assert mos.search("flowerpot", cube=cube, k=5, mode="keyword") == []
    assert keyword_table_rows(data_dir, cube) == 0


VOCABULARY = ["apple", "banana", "cherry", "harbor", "falcon", "gamma"]
Content = tuple[str, str]  # text, status


class KeywordModel:
    """A plain model of what keyword search must find: each item's versions, and the log."""

    def __init__(self) -> None:
        self.versions: dict[str, list[Content]] = {}
        self.log: list[tuple[str, Content]] = []

    def record(self, item_id: str, content: Content) -> None:
        self.versions.setdefault(item_id, []).append(content)
        self.log.append((item_id, content))

    def current(self, item_id: str) -> Content:
        return self.versions[item_id][-1]

    def active(self) -> dict[str, str]:
        return {i: v[-1][0] for i, v in self.versions.items() if v[-1][1] == "active"}

    def expected(self, word: str) -> set[str]:
        return {i for i, text in self.active().items() if word in text.split()}


def _check_keywords(mos: MemOS, model: KeywordModel, cube: str, data_dir: Path) -> None:
    for word in VOCABULARY:
        stored = mos.store.keyword_search(cube, word, 1000, ItemFilter())
        assert {i for i, _ in stored} == model.expected(word), word
        hits = mos.search(word, cube=cube, k=1000, mode="keyword")
        assert set(ids_of(hits)) == model.expected(word), word
    assert keyword_table_rows(data_dir, cube) == len(model.active())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_keyword_index_follows_random_histories(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    data_dir, cube = tmp_path / f"data-{seed}", "notes"
    mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
    mos.create_cube(cube)
    model = KeywordModel()

    def text() -> str:
        return " ".join(rng.sample(VOCABULARY, rng.randint(1, 3)))

    try:
        for step in range(45):
            op = rng.choice(
                ["add", "add", "update", "delete", "rollback", "rollback_cube", "reopen"]
            )
            active = sorted(model.active())
            if op == "add" or not model.versions:
                new = text()
                item = mos.add(new, cube=cube)
                model.record(item.id, (new, "active"))
            elif op == "update" and active:
                item_id, new = rng.choice(active), text()
                mos.update(item_id, new)
                model.record(item_id, (new, "active"))
            elif op == "delete" and active:
                item_id = rng.choice(active)
                mos.delete(item_id)
                model.record(item_id, (model.current(item_id)[0], "deleted"))
            elif op == "rollback":
                item_id = rng.choice(sorted(model.versions))
                to_version = rng.randint(1, len(model.versions[item_id]))
                mos.rollback(item_id, to_version=to_version)
                model.record(item_id, model.versions[item_id][to_version - 1])
            elif op == "rollback_cube":
                head = 1 + len(model.log)
                to_seq = rng.randint(1, head)
                past: dict[str, Content] = {}
                for item_id, content in model.log[: to_seq - 1]:
                    past[item_id] = content
                wanted = {}
                for item_id in model.versions:
                    now = model.current(item_id)
                    target = past.get(item_id, (now[0], "deleted"))
                    if target != now:
                        wanted[item_id] = target
                mos.rollback_cube(cube, to_seq=to_seq)
                for event in mos.log(cube, after_seq=head):
                    assert event.item_id is not None
                    model.record(event.item_id, wanted[event.item_id])
            elif op == "reopen":
                mos.close()
                mos = MemOS.open(data_dir, embedder=HashEmbedder(64))
            _check_keywords(mos, model, cube, data_dir)
            if step % 15 == 14:  # an exported and imported copy finds the same, scores too
                target_dir = tmp_path / f"copy-{seed}-{step}"
                mos.export_cube(cube, tmp_path / f"export-{seed}-{step}")
                with MemOS.open(target_dir, embedder=HashEmbedder(64)) as copy:
                    copy.import_cube(tmp_path / f"export-{seed}-{step}")
                    _check_keywords(copy, model, cube, target_dir)
                    for word in VOCABULARY:
                        assert copy.search(word, cube=cube, k=100, mode="keyword") == mos.search(
                            word, cube=cube, k=100, mode="keyword"
                        )
    finally:
        mos.close()


def test_failed_commit_leaves_the_keyword_index(mos: MemOS, cube: str, data_dir: Path) -> None:
    item = mos.add("the boat is moored at pier seven", cube=cube)
    with pytest.raises(InvalidInput):
        mos.update(item.id, "x" * (mos.limits.max_text_chars + 1))
    stale = item.version + 5
    with pytest.raises(VersionConflict):
        mos.update(item.id, "the boat sank", expected_version=stale)
    assert ids_of(mos.search("pier", cube=cube, mode="keyword")) == [item.id]
    assert mos.search("sank", cube=cube, mode="keyword") == []
    assert keyword_table_rows(data_dir, cube) == 1


# hostile queries ----------------------------------------------------------------------------------

HOSTILE = [
    'what\'s "AND" NEAR(',
    '"',
    "NEAR(",
    "AND",
    "OR OR OR",
    "NOT",
    "*",
    "apple*",
    "^apple",
    "-apple",
    "+apple",
    "text:apple",
    "{text}:apple",
    "((apple",
    "apple))",
    "'; DROP TABLE items; --",
    "\\",
    "🙂🙃",
    "\u200b\u200d",
    "日本語のテキスト",
    "a" * 10_000,
    " ".join(f"w{n}" for n in range(500)),
]


@pytest.fixture
def fruit(mos: MemOS, cube: str) -> str:
    mos.add_many(["apple pie recipe", "banana bread", "cherry jam and apple"], cube=cube)
    return cube


@pytest.mark.parametrize("query", HOSTILE)
@pytest.mark.parametrize("mode", MODES)
def test_hostile_queries_never_raise(mos: MemOS, fruit: str, mode: str, query: str) -> None:
    hits = mos.search(query, cube=fruit, k=5, mode=mode)
    assert len(hits) <= 5
    assert all(hit.item.status == ItemStatus.ACTIVE for hit in hits)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=st.text(min_size=1, max_size=80))
def test_any_text_is_a_keyword_query(mos: MemOS, fruit: str, query: str) -> None:
    found = mos.store.keyword_search(fruit, query, 10, ItemFilter())
    assert len(found) <= 3
    if query.strip() and "\x00" not in query:
        mos.search(query, cube=fruit, k=3, mode="keyword")


def test_query_builder() -> None:
    assert _fts5.match_query('what\'s "AND" NEAR(') == '"near"'
    assert _fts5.match_query("INV-2291 Zoë") == '"inv" OR "2291" OR "zoë"'
    assert _fts5.match_query("the THE the") == '"the"'  # only stop words: keep them
    assert _fts5.match_query("?!* ()") is None
    words = " ".join(f"w{n}" for n in range(100))
    assert _fts5.match_query(words) == " OR ".join(f'"w{n}"' for n in range(_fts5.MAX_TERMS))


# the data dir format ------------------------------------------------------------------------------


def _downgrade_to_format_1(data_dir: Path) -> None:
    """Make ``data_dir`` what a format-1 MemOS wrote: no keyword tables."""
    with sqlite3.connect(data_dir / "memos.db") as conn:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'"
        ).fetchall()
        for (name,) in tables:
            conn.execute(f"DROP TABLE {name}")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'format_version'")
    conn.close()


def _format_version(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "memos.db") as conn:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
    conn.close()
    return str(value)


def test_format_1_data_dir_gets_its_keyword_index_on_open(data_dir: Path) -> None:
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        mos.create_cube("notes")
        mos.create_cube("Notes")  # another cube whose name differs only in case
        kept = mos.add("the wifi password is taped under the router", cube="notes")
        gone = mos.add("the old router password was hunter2", cube="notes")
        mos.delete(gone.id)
        other = mos.add("a router for the workshop", cube="Notes")
    assert _format_version(data_dir) == "2"
    _downgrade_to_format_1(data_dir)
    assert _format_version(data_dir) == "1"

    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        assert _format_version(data_dir) == "2"
        assert ids_of(mos.search("router password", cube="notes", mode="keyword")) == [kept.id]
        assert ids_of(mos.search("router", cube="Notes", mode="keyword")) == [other.id]
        assert mos.search("hunter2", cube="notes", mode="keyword") == []
        assert mos.verify("notes").ok
        # and the index is maintained from here on
        mos.rollback(gone.id, to_version=1)
        assert ids_of(mos.search("hunter2", cube="notes", mode="keyword")) == [gone.id]
    assert keyword_table_rows(data_dir, "notes") == 2
    assert keyword_table_rows(data_dir, "Notes") == 1

    # a second open builds nothing again
    with MemOS.open(data_dir, embedder=HashEmbedder(64)) as mos:
        assert len(mos.search("router", cube="notes", k=10, mode="keyword")) == 2
    assert keyword_table_rows(data_dir, "notes") == 2


# the command line ---------------------------------------------------------------------------------


def test_cli_search_mode(mos: MemOS, cube: str, data_dir: Path) -> None:
    target = mos.add("Paid invoice INV-2291 for the Lisbon office", cube=cube)
    mos.add_many(
        [f"Paid invoice INV-{n} for the Lisbon office" for n in range(2200, 2260)], cube=cube
    )
    mos.close()
    memos = Path(sys.executable).with_name("memos")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(memos), "--data-dir", str(data_dir), "search", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    for mode in ("keyword", "HYBRID"):
        done = run("INV-2291", "--cube", cube, "-k", "1", "--mode", mode, "--json")
        assert done.returncode == 0, done.stderr
        assert [hit["item"]["id"] for hit in json.loads(done.stdout)] == [target.id]
    assert run("INV-2291", "--cube", cube, "--mode", "dense").returncode == 0
    assert run("INV-2291", "--cube", cube, "--mode", "fuzzy").returncode == 2


# a LoCoMo-shaped conversation --------------------------------------------------------------------


def _locomo_conversation(
    sample_id: str,
) -> tuple[list[tuple[str, str]], list[tuple[str, set[str]]]]:
    """One conversation's turns as (dia_id, text) and its questions with their evidence."""
    (sample,) = [s for s in chat_samples() if s["sample_id"] == sample_id]
    conversation = sample["conversation"]
    turns: list[tuple[str, str]] = []
    session = 1
    while f"session_{session}" in conversation:
        turns.extend((t["dia_id"], t["text"]) for t in conversation[f"session_{session}"])
        session += 1
    questions = [(q["question"], set(q["evidence"])) for q in sample["qa"] if q.get("evidence")]
    return turns, questions


class RememberingEmbedder:
    """MiniLM that embeds each text once: dense and hybrid search embed the same questions,
    and the questions are embedded up front in one batch (fast, and the same vectors)."""

    def __init__(self) -> None:
        self.model = MiniLMEmbedder()
        self.name, self.dim = self.model.name, self.model.dim
        self.seen: dict[str, NDArray[np.float32]] = {}

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        new = [text for text in dict.fromkeys(texts) if text not in self.seen]
        if new:
            self.seen.update(zip(new, self.model.embed(new), strict=True))
        return np.stack([self.seen[text] for text in texts])


@pytest.fixture(scope="module")
def locomo_mos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MemOS, list[Any]]]:
    turns, questions = _locomo_conversation(CHAT)
    embedder = RememberingEmbedder()
    embedder.embed([question for question, _ in questions])
    with MemOS.open(tmp_path_factory.mktemp("locomo") / "data", embedder=embedder) as mos:
        mos.create_cube("conv")
        mos.add_many(
            [{"text": text, "metadata": {"dia_id": dia_id}} for dia_id, text in turns], cube="conv"
        )
        yield mos, questions


@pytest.mark.slow
def test_locomo_hybrid_recall_is_at_least_dense(locomo_mos: tuple[MemOS, list[Any]]) -> None:
    mos, questions = locomo_mos
    recall: dict[str, float] = {}
    for mode in MODES:
        hits = []
        for question, evidence in questions:
            found = mos.search(question, cube="conv", k=10, mode=mode)
            hits.append(any(hit.item.metadata["dia_id"] in evidence for hit in found))
        recall[mode] = float(np.mean(hits))
    print(f"{CHAT} recall@10 over {len(questions)} questions: {recall}")
    assert recall["hybrid"] >= recall["dense"] - 0.02, recall
    assert recall["keyword"] > 0.3, recall
