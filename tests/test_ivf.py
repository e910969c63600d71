"""The partitioned index (``ivf{nlist}+sq8``): its code table keeps the position contract of
every code table, its fitted state rebuilds the trained index, its files are checked on load,
it finds the true neighbours after re-rank, and a cube switches to it (and refits it as it
grows) by hash-chained events that lose nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from numpy.typing import NDArray

from memos import EventOp, HashEmbedder, ItemStatus, Limits, MemOS, SearchHit
from memos.codecs import IvfCodec, IvfTable, make_codec, state_from_bytes, state_to_bytes
from memos.codecs._ivf import FIT_PER_LIST, SLACK_SHARE
from memos.errors import IntegrityError, InvalidInput
from memos.plaintext._codec_state import codec_from_blob
from memos.plaintext._partition import SCHEDULER_ACTOR, lists_for
from memos.plaintext._vector_index import VectorIndex, _sha256, _sidecar_digest

DIM = 32
CUBE = "notes"
THRESHOLD = 2000
QUERIES = ("memory 17 about topic 3", "topic 5", "number 999", "about topic 30 number 12")


def mixture(n: int, dim: int = DIM, seed: int = 0, clusters: int = 200) -> NDArray[np.float32]:
    """Unit vectors like embeddings: a shared mean direction, clusters of different spread in
    a low-rank subspace, a little noise in every dimension (not isotropic noise). One
    distribution per ``dim``; ``seed`` draws from it."""
    shape = np.random.default_rng(dim)
    rank = dim * 3 // 8
    basis = np.linalg.qr(shape.standard_normal((dim, rank)))[0].T
    centres = shape.standard_normal((clusters, rank))
    spread = shape.uniform(0.4, 1.0, (clusters, 1))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, clusters, n)
    latent = centres[which] + spread[which] * rng.standard_normal((n, rank))
    mean = 0.6 * np.sqrt(rank / dim) * np.ones(dim)
    rows = latent @ basis + mean + 0.05 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def fitted(name: str, sample: NDArray[np.float32]) -> IvfCodec:
    codec = make_codec(name)
    blob = state_to_bytes(codec.name, codec.fit(sample))
    rebuilt = make_codec(codec.name, state_from_bytes(codec.name, blob))
    assert isinstance(rebuilt, IvfCodec)
    return rebuilt


def ivf_table(codec: IvfCodec, dim: int = DIM) -> IvfTable:
    table = codec.new_table(dim)
    assert isinstance(table, IvfTable)
    return table


@pytest.fixture(scope="module")
def sample() -> NDArray[np.float32]:
    return mixture(2000, seed=1)


@pytest.fixture(scope="module")
def codec(sample: NDArray[np.float32]) -> IvfCodec:
    return fitted("ivf16+sq8", sample)


# names and states -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical", "nlist"),
    [("ivf4096+sq8", "ivf4096+sq8", 4096), ("ivf0064+fp16", "ivf64+fp16", 64)],
)
def test_ivf_names(name: str, canonical: str, nlist: int) -> None:
    codec = make_codec(name)
    assert isinstance(codec, IvfCodec)
    assert (codec.name, codec.nlist, codec.fit_min) == (canonical, nlist, FIT_PER_LIST * nlist)
    assert (codec.fitted, codec.exact, codec.bytes_per_vector(DIM)) == (False, True, 4.0 * DIM)


@pytest.mark.parametrize("name", ["ivf0+sq8", "ivf+sq8", "ivf64+sq4", "ivf64", "ivf70000+sq8"])
def test_bad_ivf_names_are_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInput):
        make_codec(name)


def test_the_state_rebuilds_the_trained_index(sample: NDArray[np.float32]) -> None:
    codec = make_codec("ivf16+sq8")
    state = codec.fit(sample)
    assert sorted(state) == ["centroids", "ranges"]
    assert state["centroids"].shape == (16, DIM)
    assert state["ranges"].shape == (2 * DIM,)
    # what FAISS trains on the same sample, filled and searched directly
    trained = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(DIM), DIM, 16, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    trained.train(sample)
    trained.add(sample)
    trained.nprobe = 4
    table = ivf_table(fitted("ivf16+sq8", sample))
    table.nprobe = 4
    table.add(sample)
    queries = mixture(20, seed=7)
    direct_scores, direct_ids = trained.search(queries, 10)
    for query, scores, ids in zip(queries, direct_scores, direct_ids, strict=True):
        got_scores, got_ids = table.search(query, 10)
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_scores, scores)
    # the same sample gives the same state: the same content address
    assert state_to_bytes(codec.name, codec.fit(sample)) == state_to_bytes(codec.name, state)


def test_fp16_lists_keep_only_the_centroids(sample: NDArray[np.float32]) -> None:
    codec = fitted("ivf16+fp16", sample)
    table = ivf_table(codec)
    table.add(sample)
    assert table.nbytes == len(sample) * (2 * DIM + 8)
    assert codec.bytes_per_vector(DIM) == 2 * DIM + 8
    assert table.search(sample[5], 1)[1].tolist() == [5]


def test_a_bad_state_is_refused(sample: NDArray[np.float32]) -> None:
    state = make_codec("ivf16+sq8").fit(sample)
    centroids, ranges = state["centroids"], state["ranges"]
    bad: list[dict[str, NDArray[np.float32]]] = [
        {"centroids": centroids},  # sq8 needs its ranges
        {**state, "extra": ranges},
        {"centroids": centroids[:8], "ranges": ranges},  # another nlist
        {"centroids": centroids, "ranges": ranges[:-1]},
        {"centroids": centroids.reshape(-1), "ranges": ranges},
        {"centroids": np.full_like(centroids, np.nan), "ranges": ranges},
        {"centroids": centroids.astype(np.float64), "ranges": ranges},  # type: ignore[dict-item]
    ]
    for state_ in bad:
        with pytest.raises(ValueError, match="ivf16"):
            make_codec("ivf16+sq8", state_)
    with pytest.raises(ValueError, match="ivf16"):
        make_codec("ivf16+fp16", state)  # the ranges are not an fp16 codec's
    with pytest.raises(ValueError, match="fitted to 32-d"):
        make_codec("ivf16+sq8", state).new_table(DIM * 2)
    with pytest.raises(InvalidInput, match="at least 624"):
        make_codec("ivf16+sq8").fit(sample[:623])


# the position contract ------------------------------------------------------------------------


def _check_against(table: IvfTable, model: NDArray[np.float32], rng: np.random.Generator) -> None:
    """Every position holds the model's vector at that position; filters select positions."""
    assert len(table) == len(model)
    assert table.nbytes == len(model) * (DIM + 8)
    for query in mixture(3, seed=int(rng.integers(1 << 30))):
        scores, positions = table.search(query, len(model) + 5)
        assert sorted(positions.tolist()) == list(range(len(model)))
        # 8-bit codes: scores within the quantiser's error of the model's
        np.testing.assert_allclose(scores, model[positions] @ query, atol=0.02)
    for position in rng.choice(len(model), min(len(model), 10), replace=False):
        assert position in table.search(model[position], 3)[1]
    if len(model):
        allowed = np.sort(rng.choice(len(model), min(len(model), 7), replace=False))
        _, found = table.search(query, len(model))
        _, chosen = table.search(query, len(model), allowed)
        assert sorted(chosen.tolist()) == allowed.tolist()
        # the allowed ones in the unfiltered order: a filter drops others, never reorders
        assert chosen.tolist() == [p for p in found.tolist() if p in set(allowed.tolist())]


def test_the_table_keeps_the_position_contract() -> None:
    rng = np.random.default_rng(3)
    pool = mixture(6000, seed=4)
    # fitted to the pool, so no vector's residual falls outside the quantiser's ranges
    table = ivf_table(fitted("ivf16+sq8", pool))
    table.nprobe = 16  # scan every list: the answers are then exact to compare
    model = np.zeros((0, DIM), dtype=np.float32)
    used = 0
    for step in range(40):
        if step % 3 == 2 and len(model):
            gone = rng.choice(len(model), int(rng.integers(1, min(len(model), 60) + 1)), False)
            table.remove(np.sort(gone))
            model = np.delete(model, gone, axis=0)
        else:
            n = int(rng.integers(1, 300))
            table.add(pool[used : used + n])
            model = np.concatenate([model, pool[used : used + n]])
            used += n
        _check_against(table, model, rng)
    table.remove(np.arange(len(model)))
    _check_against(table, model[:0], rng)
    assert table.search(pool[0], 5)[1].size == 0
    table.add(pool[:10])
    _check_against(table, pool[:10], rng)


def test_a_search_finds_k_vectors_however_few_lists_it_probes(codec: IvfCodec) -> None:
    vectors = mixture(3000, seed=5)
    table = ivf_table(codec)
    table.add(vectors)
    table.nprobe = 1
    rng = np.random.default_rng(5)
    for _ in range(10):
        # a narrow filter: its few vectors lie in lists the query is not near
        allowed = np.sort(rng.choice(3000, 5, replace=False))
        _, found = table.search(vectors[0], 10, allowed)
        assert sorted(found.tolist()) == allowed.tolist()
    half = np.arange(0, 3000, 2)
    assert sorted(table.search(vectors[0], 3000, half)[1].tolist()) == half.tolist()
    assert len(table.search(vectors[0], 10)[1]) == 10
    assert sorted(table.search(vectors[0], 3000)[1].tolist()) == list(range(3000))


def test_growing_lists_are_compacted(codec: IvfCodec) -> None:
    table = ivf_table(codec)
    for row in mixture(1500, seed=6):
        table.add(row[None, :])
        assert table.slack_bytes <= SLACK_SHARE * table.nbytes
    table.compact()
    assert table.slack_bytes == 0
    assert len(table) == 1500


# files ----------------------------------------------------------------------------------------


def test_a_saved_table_loads_and_answers_alike(codec: IvfCodec, tmp_path: Path) -> None:
    vectors = mixture(3000, seed=8)
    table = ivf_table(codec)
    table.nprobe = 4
    table.add(vectors)
    table.remove(np.arange(0, 3000, 7))
    path = tmp_path / "t.codes"
    table.save(path)
    loaded = codec.load_table(path, DIM)
    assert isinstance(loaded, IvfTable)
    loaded.nprobe = 4
    assert len(loaded) == len(table)
    for query in mixture(10, seed=9):
        got, want = loaded.search(query, 20), table.search(query, 20)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


def _other_index(kind: str, sample: NDArray[np.float32]) -> faiss.Index:
    if kind == "flat":
        index = faiss.IndexFlatIP(DIM)
        index.add(sample)
        return index
    other = fitted("ivf16+sq8", mixture(2000, seed=99)) if kind == "another fit" else None
    trained = ivf_table(other or fitted("ivf16+sq8", sample)).index
    if kind == "labels":  # lists whose ids are not the positions 0..n-1
        trained.add_with_ids(sample[:10], np.arange(100, 110, dtype=np.int64))
    else:
        trained.add(sample[:10])
    return trained


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flat", "another fit", "labels"])
def test_a_bad_table_file_is_refused(
    codec: IvfCodec, sample: NDArray[np.float32], tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "t.codes"
    if damage == "garbage":
        path.write_bytes(b"IwFl" + bytes(range(256)) * 4)
    elif damage == "truncated":
        table = ivf_table(codec)
        table.add(sample)
        table.save(path)
        path.write_bytes(path.read_bytes()[:-1000])
    else:
        faiss.write_index(_other_index(damage, sample), str(path))
    with pytest.raises(
        ValueError, match=r"unreadable IVF index|not encoded with|not the positions"
    ):
        codec.load_table(path, DIM)


def test_an_unfitted_ivf_codec_holds_exact_vectors(tmp_path: Path) -> None:
    codec = make_codec("ivf16+sq8")
    table = codec.new_table(DIM)
    table.add(mixture(10))
    table.save(tmp_path / "t.codes")
    assert len(codec.load_table(tmp_path / "t.codes", DIM)) == 10
    ivf = ivf_table(fitted("ivf16+sq8", mixture(2000)))
    ivf.save(tmp_path / "ivf.codes")
    with pytest.raises(ValueError, match="not the exact vectors"):
        codec.load_table(tmp_path / "ivf.codes", DIM)


# recall ---------------------------------------------------------------------------------------


def test_recall_after_rerank_on_a_realistic_mixture() -> None:
    vectors = mixture(20_200, dim=64, seed=11)
    queries, base = vectors[:200], vectors[200:]
    codec = fitted("ivf256+sq8", base)
    index = VectorIndex(codec, 64)
    index.upsert([str(i) for i in range(len(base))], base)
    table = index._table
    assert isinstance(table, IvfTable)
    table.nprobe = 16  # 1 list in 16
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]

    def exact(ids: object) -> dict[str, NDArray[np.float32]]:
        return {i: base[int(i)] for i in ids}  # type: ignore[attr-defined]

    hits = raw_hits = 0
    for query, true in zip(queries, truth, strict=True):
        found = [int(i) for i, _ in index.search(query, 10, exact=exact)]
        raw = [int(i) for i, _ in index.search(query, 10)]
        hits += len(set(found) & set(true.tolist()))
        raw_hits += len(set(raw) & set(true.tolist()))
    assert hits / truth.size >= 0.98
    assert raw_hits / truth.size >= 0.9


# a cube's life --------------------------------------------------------------------------------


def _open(data_dir: Path, partition_items: int | None = THRESHOLD) -> MemOS:
    limits = Limits(partition_items=partition_items)
    return MemOS.open(data_dir, embedder=HashEmbedder(64), limits=limits)


def _texts(n: int, start: int = 0) -> list[str]:
    return [f"memory number {i} about topic {i % 37}" for i in range(start, start + n)]


def _config_events(mos: MemOS) -> list[tuple[EventOp, str, str | None, dict[str, object]]]:
    return [
        (e.op, e.actor, e.reason, e.payload or {})
        for e in mos.log(CUBE)
        if e.op in (EventOp.CODEC_FIT, EventOp.REENCODE)
    ]


def _index_ids(mos: MemOS) -> set[str]:
    return mos._engine.indexes.current(mos.get_cube(CUBE)).ids()


def _active_ids(mos: MemOS) -> set[str]:
    return {i.id for i in mos.store.iter_items(CUBE) if i.status == ItemStatus.ACTIVE}


def _pairs(hits: list[SearchHit]) -> list[tuple[str, float]]:
    return [(hit.item.id, hit.score) for hit in hits]


def _answers(mos: MemOS, k: int = 8) -> list[list[tuple[str, float]]]:
    return [_pairs(mos.search(q, cube=CUBE, k=k, mode="dense")) for q in QUERIES]


def test_lists_follow_the_cube() -> None:
    assert [lists_for(n) for n in (2000, 2496, 100_000, 200_000, 1_000_000)] == [
        32,
        64,
        1024,
        2048,
        4096,
    ]
    assert lists_for(10**9) == 65_536


def test_a_cube_is_partitioned_at_the_threshold_and_refitted_as_it_grows(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        mos.create_cube(CUBE)
        added = mos.add_many(_texts(THRESHOLD - 1), cube=CUBE)
        assert _config_events(mos) == []
        mos.add("the one that tips it over", cube=CUBE)
        [(op, actor, reason, payload)] = _config_events(mos)
        assert (op, actor, reason) == (EventOp.REENCODE, SCHEDULER_ACTOR, "partition: 2000 items")
        assert (payload["codec"], payload["items"], payload["fit_vectors"]) == (
            "ivf32+sq8",
            THRESHOLD,
            THRESHOLD,
        )
        stats = mos.cube_stats(CUBE)
        assert (stats.codec, stats.encoding, stats.fitted) == ("ivf32+sq8", "ivf32+sq8", True)
        assert stats.ram_bytes_per_vector == 64 + 8
        assert _index_ids(mos) == _active_ids(mos)
        for item in added[::97]:
            assert mos.search(item.text, cube=CUBE, k=1, mode="dense")[0].item.id == item.id
        # grown past what 32 lists suit (39 vectors a list trains 64 of them): refitted
        mos.add_many(_texts(495, start=THRESHOLD), cube=CUBE)
        assert len(_config_events(mos)) == 1
        mos.add("one more", cube=CUBE)
        (op, actor, reason, payload) = _config_events(mos)[-1]
        assert (op, actor, payload["codec"]) == (EventOp.CODEC_FIT, SCHEDULER_ACTOR, "ivf64+sq8")
        assert reason == "repartition: 2496 items, 32 -> 64 lists"
        assert mos.get_cube(CUBE).codec_version == 2
        assert _index_ids(mos) == _active_ids(mos)
        assert len(_index_ids(mos)) == 2496
        report = mos.verify(CUBE)
        assert (report.ok, report.head_seq) == (True, 2496 + 3)


def test_searches_never_partition_and_the_threshold_can_be_off(data_dir: Path) -> None:
    with _open(data_dir, partition_items=None) as mos:
        mos.create_cube(CUBE, codec="fp16")
        mos.add_many(_texts(THRESHOLD + 100), cube=CUBE)
        assert _config_events(mos) == []
    with _open(data_dir) as mos:
        _answers(mos)
        assert _config_events(mos) == []
        mos.add("a write", cube=CUBE)
        [(op, _, reason, payload)] = _config_events(mos)
        assert (op, reason) == (EventOp.REENCODE, "partition: 2101 items")
        assert payload["previous"] == {"codec": "fp16", "codec_version": 0}


def _build(mos: MemOS) -> None:
    """A partitioned cube built incrementally, with updates, deletes and a rollback."""
    mos.create_cube(CUBE, codec="int8")
    added = mos.add_many(_texts(1100), cube=CUBE)
    added += mos.add_many(_texts(1100, start=1100), cube=CUBE)
    assert mos.get_cube(CUBE).codec == "ivf32+sq8"
    for item in added[::50]:
        mos.update(item.id, f"{item.text} (revised)")
    for item in added[7::60]:
        mos.delete(item.id)
    mos.rollback(added[7].id, to_version=1)


def test_reopened_and_rebuilt_indexes_answer_exactly_as_built(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        _build(mos)
        incremental = _answers(mos)
        ids = _index_ids(mos)
        assert ids == _active_ids(mos)
    with _open(data_dir) as mos:  # from the snapshot written on close
        assert mos.cube_stats(CUBE).snapshot_seq == mos.store.head(CUBE)[0]
        assert _answers(mos) == incremental
        assert _index_ids(mos) == ids
    shutil.rmtree(data_dir / "index")
    with _open(data_dir) as mos:  # rebuilt from the store
        assert _answers(mos) == incremental
        assert _index_ids(mos) == ids
        assert mos.verify(CUBE).ok


def test_a_garbage_snapshot_table_is_rebuilt_not_trusted(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        _build(mos)
        answers = _answers(mos)
    table, meta = data_dir / "index" / f"{CUBE}.codes", data_dir / "index" / f"{CUBE}.json"
    table.write_bytes(b"IwSq" + bytes(4000))
    # re-seal the sidecar, so only the table's own checks stand between it and a search
    sidecar = json.loads(meta.read_text())
    sidecar.pop("sidecar_sha256")
    sidecar["table_sha256"] = _sha256(table)
    sidecar["sidecar_sha256"] = _sidecar_digest(sidecar)
    meta.write_text(json.dumps(sidecar))
    with _open(data_dir) as mos:
        assert _answers(mos) == answers
        assert _index_ids(mos) == _active_ids(mos)


def test_filters_apply_inside_a_partitioned_search(data_dir: Path, tmp_path: Path) -> None:
    results: list[list[list[float]]] = []
    for directory, threshold in ((data_dir, THRESHOLD), (tmp_path / "flat", None)):
        with _open(directory, threshold) as mos:
            mos.create_cube(CUBE)
            mos.add_many(_texts(1000), cube=CUBE, tags=["a"])
            mos.add_many(_texts(1100, start=1000), cube=CUBE, tags=["b"])
            hits = [mos.search(q, cube=CUBE, k=8, tags=["a"], mode="dense") for q in QUERIES]
            assert all("a" in hit.item.tags for found in hits for hit in found)
            # scores, not ids: ties may fall in another order, the scores may not
            results.append([[round(hit.score, 5) for hit in found] for found in hits])
            assert mos.get_cube(CUBE).codec == ("ivf32+sq8" if threshold else "fp32")
    assert results[0] == results[1]


def test_export_import_of_an_ivf_cube_answers_identically(tmp_path: Path) -> None:
    with _open(tmp_path / "source") as mos:
        _build(mos)
        answers = _answers(mos)
        info = mos.get_cube(CUBE)
        directory = mos.export_cube(CUBE, tmp_path / "export")
    with _open(tmp_path / "fresh") as mos:
        assert mos.import_cube(directory) == info
        assert _answers(mos) == answers
        assert mos.cube_stats(CUBE).codec == "ivf32+sq8"
        assert mos.verify(CUBE).ok


def test_a_crafted_state_blob_is_an_integrity_error(data_dir: Path) -> None:
    with _open(data_dir) as mos:
        _build(mos)
        info = mos.get_cube(CUBE)
    state = make_codec("ivf16+sq8").fit(mixture(2000, dim=64))  # 16 lists, not 32
    for blob in (state_to_bytes("ivf32+sq8", state), b"garbage", state_to_bytes("int8", state)):
        with pytest.raises(IntegrityError, match="unusable"):
            codec_from_blob(info, blob)
