"""What is particular to the Redis store; the contract suites (test_contract_*.py) run the
rest against it.

Every key of a cube carries the cube's hash tag; concurrent writers with their own connections
never fork, gap or lose a write; a commit that fails leaves Redis byte-identical; the store's
keyword index tokenizes and ranks like the SQLite store's FTS5 tables; and a whole MemOS runs
on it, export and import included.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from _contract import (
    T0,
    create,
    cube_info,
    derived_entry,
    make_item,
    revise,
    vec,
)
from _redis import REDIS_URL, drop_redis_store, fresh_redis_url, prefix_of
from memos.stores.redis import RedisStore, _keywords
from redis.crc import key_slot

from memos import Change, EventOp, HashEmbedder, ItemFilter, MemOS, open_store
from memos.core._chain import verify_chain
from memos.core._types import ApiKey, ItemStatus
from memos.errors import (
    CubeNotFound,
    DataDirError,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageError,
    VersionConflict,
)
from memos.plaintext._indexes import CubeIndexes

CUBE = "notes"
# a name the SDK would refuse, but a store must still keep apart from every other key
ODD_CUBE = "odd:{name} %"
GLOBAL_KEYS = {"format", "cubes", "item-cube", "derived-cube", "access", "api-keys", "api-key"}


@pytest.fixture
def new_url(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """URLs of fresh, empty stores, each under its own prefix, deleted after the test."""
    urls: list[str] = []

    def make() -> str:
        urls.append(fresh_redis_url())
        return urls[-1]

    yield make
    for url in urls:
        drop_redis_store(url)


@pytest.fixture
def url(new_url: Callable[[], str]) -> str:
    return new_url()


def dump(url: str) -> dict[bytes, bytes | None]:
    """Every key of the store with its serialized value (Redis DUMP)."""
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = sorted(client.scan_iter(match=f"{prefix_of(url)}:*", count=1000))
        return {key: client.dump(key) for key in keys}


def fill(store: RedisStore, cube: str) -> None:
    """A cube with items, an update, a derived artifact, access stats, a key and a blob."""
    store.create_cube(cube_info(cube), actor="alice")
    a = make_item(f"{cube}-a", cube, "Melanie painted a lake", tags=("art",),
                  metadata={"session": "s1"})  # fmt: skip
    b = make_item(f"{cube}-b", cube, "We swam in the lake", user="bob")
    store.commit([create(a), create(b)])
    store.commit([revise(b, text="We swam in the cold lake")[0]])
    store.commit([Change(op=EventOp.KV_BUILD, cube=cube, actor="alice", ts=T0,
                         derived=derived_entry(f"{cube}-kv", cube, a))])  # fmt: skip
    store.record_access([a.id], T0, half_life_s=3600.0)
    store.put_api_key(
        ApiKey(id=f"{cube}-key", principal="alice", secret_sha256="0" * 64, created_at=T0)
    )
    store.put_blob(cube.encode())


def check_chain(store: RedisStore, cube: str) -> list[int]:
    events = store.events(cube)
    report = verify_chain(cube, events, head=store.head(cube), items=store.iter_items(cube))
    assert report.ok, report
    return [event.seq for event in events]


# keys -------------------------------------------------------------------------------------------


def test_every_key_of_a_cube_carries_its_hash_tag(url: str) -> None:
    store = RedisStore.from_url(url)
    for cube in (CUBE, ODD_CUBE):
        fill(store, cube)
    prefix = prefix_of(url)
    tags = {quote(CUBE, safe=""): CUBE, quote(ODD_CUBE, safe=""): ODD_CUBE}
    slots: dict[str, set[int]] = {CUBE: set(), ODD_CUBE: set()}
    for key in dump(url):
        rest = key.decode().removeprefix(f"{prefix}:")
        if rest.startswith("{"):
            tag, _, _ = rest[1:].partition("}")
            slots[tags[tag]].add(key_slot(key))
        else:
            assert rest.split(":")[0] in {*GLOBAL_KEYS, "blob"}, key
    # one slot per cube, the slot of its tag alone
    assert slots == {name: {key_slot(tag.encode())} for tag, name in tags.items()}
    # the two cubes stay apart in every read
    for cube in (CUBE, ODD_CUBE):
        check_chain(store, cube)
        assert store.filter_item_ids(cube, ItemFilter(tags=("art",))) == [f"{cube}-a"]
        found = store.keyword_search(cube, "lake", 10, ItemFilter())
        assert {item_id for item_id, _ in found} == {f"{cube}-a", f"{cube}-b"}
        assert [entry.id for entry in store.derived_entries(cube)] == [f"{cube}-kv"]
    store.close()


def test_teardown_leaves_no_key(url: str) -> None:
    store = RedisStore.from_url(url)
    fill(store, CUBE)
    store.close()
    assert dump(url)
    drop_redis_store(url)
    assert dump(url) == {}


def test_the_url_names_the_prefix(url: str, new_url: Callable[[], str]) -> None:
    store = open_store(url)
    assert store.url.startswith("redis://")
    assert store.url.endswith(f"prefix={prefix_of(url)}")
    store.create_cube(cube_info(CUBE), actor="alice")
    again = open_store(store.url, create=False)
    assert again.get_cube(CUBE) == cube_info(CUBE)
    for closing in (store, again):
        closing.close()
    with pytest.raises(DataDirError):
        open_store(new_url(), create=False)  # nothing there yet
    for bad in ("redis://127.0.0.1:6379/0?prefix=a{b}", "redis://127.0.0.1:6379/0?prefix="):
        with pytest.raises(DataDirError):
            open_store(bad)
    with pytest.raises(DataDirError):
        RedisStore.from_url("sqlite:///nowhere")


def test_an_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        open_store("redis://127.0.0.1:1/0?prefix=nobody&socket_connect_timeout=1")


# atomicity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["version_conflict", "unknown_cube", "unknown_artifact"])
def test_a_commit_failing_midway_leaves_redis_unchanged(url: str, failure: str) -> None:
    store = RedisStore.from_url(url)
    store.create_cube(cube_info(CUBE), actor="alice")
    store.create_cube(cube_info("diary"), actor="alice")
    a = make_item("a", CUBE, "first words")
    store.commit([create(a, vector=vec(1))])
    store.commit([Change(op=EventOp.KV_BUILD, cube=CUBE, actor="alice", ts=T0,
                         derived=derived_entry("kv-a", CUBE, a))])  # fmt: skip
    before = dump(url)

    update, a2 = revise(a, text="second words", vector=vec(2))  # drops kv-a on the way
    third: Change
    expected: type[Exception]
    if failure == "version_conflict":
        third, _ = revise(a2, text="lost", expected_version=1)
        expected = VersionConflict
    elif failure == "unknown_cube":
        third, expected = create(make_item("z", "nowhere")), CubeNotFound
    else:
        third = Change(op=EventOp.KV_DROP, cube=CUBE, actor="alice", ts=T0, dropped="kv-none")
        expected = NotFound
    with pytest.raises(expected):
        store.commit([create(make_item("b", CUBE, "more words")), update, third])

    assert dump(url) == before
    events = store.commit([create(make_item("b", CUBE, "more words")), update])
    assert [(e.seq, e.op) for e in events] == [(4, "create"), (5, "update"), (6, "kv_drop")]
    assert check_chain(store, CUBE) == [1, 2, 3, 4, 5, 6]
    store.close()


# concurrency ------------------------------------------------------------------------------------

ROUNDS = 40


def contend(url: str, tag: str, rounds: int) -> dict[str, int]:
    """Per round, one batch: a new item and an increment of the shared counter, read first
    (a stale read conflicts; the item is then added alone)."""
    store = RedisStore.from_url(url)
    outcome = {"increments": 0, "conflicts": 0}
    for n in range(rounds):
        added = create(make_item(f"{tag}-{n}", CUBE, f"note {n} from {tag}"))
        counter = store.get_item("counter")
        assert counter is not None
        increment, _ = revise(counter, text=str(int(counter.text) + 1))
        try:
            store.commit([added, increment])
            outcome["increments"] += 1
        except VersionConflict:
            outcome["conflicts"] += 1
            store.commit([added])
    store.close()
    return outcome


def _process_worker(url: str, tag: str, rounds: int, go: Any, results: Any) -> None:
    go.wait(120)
    results.put(contend(url, tag, rounds))


def start_shared_cube(url: str) -> RedisStore:
    store = RedisStore.from_url(url)
    store.create_cube(cube_info(CUBE), actor="alice")
    store.commit([create(make_item("counter", CUBE, "0"))])
    return store


def check_no_write_lost(store: RedisStore, outcomes: list[dict[str, int]], tags: list[str]) -> None:
    increments = sum(outcome["increments"] for outcome in outcomes)
    assert sum(outcome["conflicts"] for outcome in outcomes) + increments == len(tags) * ROUNDS
    counter = store.get_item("counter")
    assert counter is not None
    assert (counter.text, counter.version) == (str(increments), 1 + increments)
    expected = {f"{tag}-{n}" for tag in tags for n in range(ROUNDS)} | {"counter"}
    assert {item.id for item in store.iter_items(CUBE)} == expected
    # cube_create + counter + every item + every increment, gapless and verifying
    seqs = check_chain(store, CUBE)
    assert seqs == list(range(1, 3 + len(tags) * ROUNDS + increments))
    versions = [e.after.version for e in store.events(CUBE, item_id="counter") if e.after]
    assert versions == list(range(1, 2 + increments))


def test_threads_with_their_own_stores_lose_no_write(url: str) -> None:
    store = start_shared_cube(url)
    tags = ["alpha", "beta", "gamma"]
    outcomes: list[dict[str, int]] = []
    barrier = threading.Barrier(len(tags))

    def run(tag: str) -> None:
        barrier.wait()
        outcomes.append(contend(url, tag, ROUNDS))

    threads = [threading.Thread(target=run, args=(tag,)) for tag in tags]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(outcomes) == len(tags)
    check_no_write_lost(store, outcomes, tags)
    store.close()


@pytest.mark.slow
def test_processes_lose_no_write(url: str) -> None:
    store = start_shared_cube(url)
    tags = ["alpha", "beta"]
    spawn = multiprocessing.get_context("spawn")
    go, results = spawn.Event(), spawn.Queue()
    workers = [
        spawn.Process(target=_process_worker, args=(url, tag, ROUNDS, go, results)) for tag in tags
    ]
    for worker in workers:
        worker.start()
    go.set()  # both start writing at once, once imported
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    check_no_write_lost(store, outcomes, tags)
    store.close()


# keyword search ---------------------------------------------------------------------------------

TEXTS = [
    "Melanie painted a sunrise over the lake last summer",
    "We swam in the lake; the lake was cold",
    "Caroline went to an LGBTQ support group yesterday and found it incredibly powerful",
    "The support group meets every Tuesday evening at the community centre",
    "She is painting a mural for the café near the station",
    "Invoice INV-2291 is overdue; the accountant called twice",
    "The kids loved the pottery workshop, especially the painting part",
    "Résumé sent to three companies, and an interview is scheduled",
    "Running a charity race for mental health awareness",
    "Nothing in common here at all",
]


def test_tokens_are_those_fts5_indexes() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61 remove_diacritics 2')"
    )
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    extra = ["Ünïcödé — naïve CAFÉ; e\u0301te\u0301, relational generalization ponies trekked"]
    for rowid, text in enumerate([*TEXTS, *extra], start=1):
        conn.execute("INSERT INTO t (rowid, text) VALUES (?, ?)", (rowid, text))
        rows = conn.execute("SELECT term FROM v WHERE doc = ? ORDER BY offset", (rowid,))
        assert _keywords.tokens(text) == [term for (term,) in rows], text
    conn.close()


def test_keyword_ranking_agrees_with_sqlite(url: str, tmp_path: Path) -> None:
    stores = [RedisStore.from_url(url), open_store(f"sqlite:///{tmp_path / 'data'}")]
    for store in stores:
        store.create_cube(cube_info(CUBE), actor="alice")
        store.commit([create(make_item(f"t{n}", CUBE, text)) for n, text in enumerate(TEXTS)])
    queries = ["lake", "painting", "support group", "incredible", "cafe resume", "INV 2291",
               "what did Melanie paint?", "the", "zeppelin", "Paint the LAKE cold"]  # fmt: skip
    for query in queries:
        on_redis, on_sqlite = (
            store.keyword_search(CUBE, query, 5, ItemFilter()) for store in stores
        )
        assert [i for i, _ in on_redis] == [i for i, _ in on_sqlite], query
        assert [s for _, s in on_redis] == pytest.approx([s for _, s in on_sqlite], rel=1e-9)
    for store in stores:
        store.close()


def bm25_scores(
    terms: Sequence[str],
    postings: Mapping[str, Mapping[str, int]],
    lengths: Mapping[str, int],
    *,
    documents: int,
    total_length: int,
) -> dict[str, float]:
    """FTS5's bm25, negated so higher is better, of each document in ``lengths``: the
    arithmetic :data:`_keywords.BM25_SCRIPT` runs, in the same order.

    ``postings`` maps each term to ``{document: term frequency}`` over the whole index,
    ``lengths`` each document to score to its length in terms; ``documents`` and
    ``total_length`` describe the whole index (they give the idf and the average length)."""
    average = total_length / documents if documents else 0.0
    scores = dict.fromkeys(lengths, 0.0)
    for term in terms:
        posting = postings.get(term, {})
        idf = math.log((documents - len(posting) + 0.5) / (len(posting) + 0.5))
        idf = idf if idf > 0 else _keywords.MIN_IDF
        for doc, length in lengths.items():
            tf = posting.get(doc, 0)
            if tf:
                norm = 1 - _keywords.B + _keywords.B * (length / average if average else 0.0)
                scores[doc] += idf * tf * (_keywords.K1 + 1) / (tf + _keywords.K1 * norm)
    return scores


def ranking_in_python(
    url: str, cube: str, query: str, k: int, allowed: set[str] | None
) -> list[tuple[str, float]]:
    """What the BM25 script must answer, computed by :func:`bm25_scores` from the
    index read whole: postings, lengths, total length and write order."""
    base = f"{prefix_of(url)}:{{{quote(cube, safe='')}}}"
    terms = _keywords.query_terms(query)
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as client:
        postings = {
            term: {doc: int(tf) for doc, tf in client.hgetall(f"{base}:terms:{term}").items()}
            for term in set(terms)
        }
        every = {doc: int(n) for doc, n in client.hgetall(f"{base}:lengths").items()}
        total = int(client.get(f"{base}:total-length") or 0)
        rows = dict(client.zrange(f"{base}:items", 0, -1, withscores=True))
    candidates = set().union(*postings.values()) & (every.keys() if allowed is None else allowed)
    lengths = {doc: every[doc] for doc in candidates if doc in every}
    scores = bm25_scores(terms, postings, lengths, documents=len(every), total_length=total)
    best = sorted(scores, key=lambda doc: (-scores[doc], rows.get(doc, math.inf), doc))[:k]
    return [(doc, scores[doc]) for doc in best]


# few words, so that terms are common (idf at its floor), texts repeat (scores tie) and a
# query word can stem like another ("paint", "painting")
WORDS = ["lake", "paint", "painting", "cold", "swim", "support", "group", "café", "x", "inv"]


def test_the_bm25_script_ranks_as_python_does(url: str) -> None:
    rng = random.Random(7)
    store = RedisStore.from_url(url)
    store.create_cube(cube_info(CUBE), actor="alice")
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 8))) for _ in range(150)]
    items = [
        make_item(f"i{n:03d}", CUBE, text, tags=("odd",) if n % 2 else ())
        for n, text in enumerate(texts)
    ]
    store.commit([create(item) for item in items])
    # updates and deletes move lengths, postings and write order
    store.commit([revise(item, text=f"{item.text} lake lake")[0] for item in items[::7]])
    gone = [item for item in items[3::11] if item not in items[::7]]
    store.commit([revise(item, status=ItemStatus.DELETED)[0] for item in gone])
    odd = ItemFilter(tags=("odd",))
    allowed = set(store.filter_item_ids(CUBE, odd))
    for _ in range(60):
        query = " ".join(rng.choices([*WORDS, "the", "zeppelin"], k=rng.randint(1, 4)))
        k = rng.choice([1, 3, 10, 40, 1000])
        for flt, only in ((ItemFilter(), None), (odd, allowed)):
            found = store.keyword_search(CUBE, query, k, flt)
            # the same doubles: the script does the same arithmetic in the same order
            assert found == ranking_in_python(url, CUBE, query, k, only), (query, k, flt)
    assert store.keyword_search(CUBE, "lake", 5, ItemFilter(tags=("none",))) == []
    store.close()


def test_the_bm25_script_is_loaded_into_a_redis_that_lost_it(url: str) -> None:
    store = RedisStore.from_url(url)
    store.create_cube(cube_info(CUBE), actor="alice")
    store.commit([create(make_item("a", CUBE, "a cold lake"))])
    assert [i for i, _ in store.keyword_search(CUBE, "lake", 5, ItemFilter())] == ["a"]
    with redis.Redis.from_url(REDIS_URL) as client:
        client.script_flush()  # as after a restart
    assert [i for i, _ in store.keyword_search(CUBE, "lake", 5, ItemFilter())] == ["a"]
    store.close()


# a whole MemOS ----------------------------------------------------------------------------------


def test_memos_runs_on_redis(new_url: Callable[[], str], tmp_path: Path) -> None:
    mos = MemOS(open_store(new_url()), embedder=HashEmbedder(64))
    mos.create_cube(CUBE, owner="alice")
    lake = mos.add("We swam in the lake; it was cold", cube=CUBE, user="alice", tags=["trip"])
    paint = mos.add("Melanie painted a sunrise", cube=CUBE, session="s1")
    gone = mos.add("a memory that gets deleted", cube=CUBE)
    hits = mos.search("cold lake", cube=CUBE, k=2, mode="hybrid")
    assert hits[0].item.id == lake.id
    assert [h.item.id for h in mos.search("sunrise", cube=CUBE, k=1, session="s1")] == [paint.id]

    mos.update(lake.id, "We hiked up the mountain", expected_version=1)
    mos.delete(gone.id, reason="asked to")
    assert [h.item.id for h in mos.search("mountain", cube=CUBE, k=1, mode="keyword")] == [lake.id]
    assert gone.id not in {h.item.id for h in mos.search("memory deleted", cube=CUBE, k=5)}
    mos.rollback(lake.id, to_version=1, reason="bad edit")
    assert mos.get(lake.id).text == "We swam in the lake; it was cold"
    assert mos.get(lake.id).version == 3
    report = mos.verify(CUBE)
    assert report.ok, report

    exported = mos.export_cube(CUBE, tmp_path / "export")
    for target_url in (new_url(), f"sqlite:///{tmp_path / 'data'}"):
        other = MemOS(open_store(target_url), embedder=HashEmbedder(64))
        other.import_cube(exported)
        assert other.verify(CUBE).ok
        assert other.log(CUBE) == mos.log(CUBE)
        assert [h.item.id for h in other.search("cold lake", cube=CUBE, k=1)] == [lake.id]
        other.close()
    mos.close()


def test_a_write_through_one_store_is_searched_through_another(url: str) -> None:
    """Two handles, each with its own connections and index, as two server processes have."""
    writer = MemOS(open_store(url), embedder=HashEmbedder(64))
    reader = MemOS(open_store(url), embedder=HashEmbedder(64))

    def found(query: str, mode: str) -> set[str]:
        return {hit.item.id for hit in reader.search(query, cube=CUBE, k=5, mode=mode)}

    writer.create_cube(CUBE)
    lake = writer.add("We swam in the lake", cube=CUBE)
    assert all(found("lake", mode) == {lake.id} for mode in ("keyword", "dense", "hybrid"))
    cold = writer.add("The lake was cold", cube=CUBE)
    assert all(found("lake", mode) == {lake.id, cold.id} for mode in ("keyword", "hybrid"))
    writer.update(lake.id, "We hiked up the mountain")
    assert found("lake", "keyword") == {cold.id}
    assert found("mountain", "keyword") == {lake.id}
    writer.delete(cold.id)
    assert all(cold.id not in found("lake cold", mode) for mode in ("keyword", "hybrid"))
    # the reader's index records where it caught up to, hash included
    index = reader._engine.indexes.current(reader.get_cube(CUBE))
    assert (index.seq, index.head_hash) == writer.store.head(CUBE)
    for closing in (writer, reader):
        closing.close()


def test_a_catch_up_names_the_hash_of_the_event_it_reached(url: str) -> None:
    store = RedisStore.from_url(url)
    store.create_cube(cube_info(CUBE), actor="alice")
    store.commit([create(make_item(f"i{n}", CUBE)) for n in range(3)])
    indexes = CubeIndexes(store, None)
    # the head's hash for the last event; the event's own for one a later write passed
    assert [indexes._hash_of(CUBE, e.seq) for e in store.events(CUBE)] == [
        e.hash for e in store.events(CUBE)
    ]
    store.close()


def test_a_digest_is_checked(url: str) -> None:
    store = RedisStore.from_url(url)
    digest = store.put_blob(b"safetensors bytes")
    with redis.Redis.from_url(REDIS_URL) as client:
        client.set(f"{prefix_of(url)}:blob:{digest}", b"tampered")
    with pytest.raises(IntegrityError, match="does not match"):
        store.get_blob(digest)
    with pytest.raises(InvalidInput):
        store.get_blob("../" + digest)
    store.close()
