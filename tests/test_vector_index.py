"""The in-RAM FAISS index: ids, filtered search and snapshots that never change an answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from memos.codecs import Fp32Codec
from memos.plaintext._vector_index import VectorIndex


def unit_rows(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def filled(n: int = 50) -> tuple[VectorIndex, list[str], np.ndarray]:
    index = VectorIndex(Fp32Codec(), 16)
    ids = [f"id{i}" for i in range(n)]
    vectors = unit_rows(n)
    index.upsert(ids, vectors)
    return index, ids, vectors


def test_search_is_exact_inner_product() -> None:
    index, ids, vectors = filled()
    query = vectors[7]
    expected = np.argsort(-(vectors @ query))[:5]
    assert [i for i, _ in index.search(query, 5)] == [ids[j] for j in expected]


def test_upsert_replaces_and_remove_forgets() -> None:
    index, _ids, vectors = filled()
    index.upsert(["id3"], vectors[9:10])
    assert len(index) == 50
    assert index.search(vectors[9], 2)[1][0] in {"id3", "id9"}
    index.remove(["id9", "missing"])
    assert "id9" not in index
    assert len(index) == 49
    assert index.search(vectors[9], 1)[0][0] == "id3"


def test_allowed_ids_restrict_the_search_before_top_k() -> None:
    index, _ids, vectors = filled()
    allowed = {"id1", "id2", "unknown"}
    hits = index.search(vectors[30], 10, allowed)
    assert {i for i, _ in hits} == {"id1", "id2"}
    assert index.search(vectors[30], 10, set()) == []


def test_snapshot_round_trip_gives_identical_answers(tmp_path: Path) -> None:
    index, _ids, vectors = filled()
    index.remove(["id4"])
    index.seq, index.head_hash = 51, "ab" * 32
    index.save(tmp_path, "cube")
    loaded = VectorIndex.load(tmp_path, "cube", Fp32Codec(), 16)
    assert loaded is not None
    assert (loaded.seq, loaded.head_hash, len(loaded)) == (51, "ab" * 32, 49)
    for row in range(0, 50, 7):
        assert loaded.search(vectors[row], 5) == index.search(vectors[row], 5)
    loaded.upsert(["new"], vectors[:1])
    assert loaded.search(vectors[0], 1)[0][0] in {"new", "id0"}


def test_a_torn_or_foreign_snapshot_is_not_trusted(tmp_path: Path) -> None:
    index, _, _ = filled()
    index.save(tmp_path, "cube")
    assert VectorIndex.load(tmp_path, "cube", Fp32Codec(), 32) is None
    faiss_file = tmp_path / "cube.codes"
    faiss_file.write_bytes(faiss_file.read_bytes()[:-100])
    assert VectorIndex.load(tmp_path, "cube", Fp32Codec(), 16) is None
    assert VectorIndex.load(tmp_path, "absent", Fp32Codec(), 16) is None


def test_positions_stay_right_through_removals_and_reinserts(tmp_path: Path) -> None:
    index, ids, vectors = filled(200)
    rng = np.random.default_rng(1)
    live = dict(zip(ids, vectors, strict=True))
    for round_ in range(5):
        gone = [str(i) for i in rng.choice(sorted(live), 15, replace=False)]
        index.remove(gone)
        for item_id in gone:
            del live[item_id]
        fresh = unit_rows(10, seed=100 + round_)
        new_ids = [f"r{round_}-{n}" for n in range(10)]
        index.upsert(new_ids, fresh)
        live.update(zip(new_ids, fresh, strict=True))
    names = sorted(live)
    matrix = np.stack([live[n] for n in names])
    allowed = set(names[::3])
    for query in unit_rows(5, seed=7):
        exact = [names[j] for j in np.argsort(-(matrix @ query))[:8]]
        assert [i for i, _ in index.search(query, 8)] == exact
        exact_allowed = [
            n for n in (names[j] for j in np.argsort(-(matrix @ query))) if n in allowed
        ]
        assert [i for i, _ in index.search(query, 8, allowed)] == exact_allowed[:8]
    index.save(tmp_path, "c")
    loaded = VectorIndex.load(tmp_path, "c", Fp32Codec(), 16)
    assert loaded is not None
    query = unit_rows(1, seed=9)[0]
    assert loaded.search(query, 8, allowed) == index.search(query, 8, allowed)
