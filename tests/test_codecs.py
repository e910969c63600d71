"""Vector codecs: names, code tables (growth, compaction, safetensors files), fitted states,
and round trips and recall on real MiniLM embeddings of chat turns (``slow``): the made-up
conversations of ``tests/data``, in the shape of the LoCoMo benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _locomo_sample import samples as chat_samples
from numpy.typing import NDArray
from safetensors.numpy import save_file

from memos import MemOS, MiniLMEmbedder
from memos.codecs import (
    FIT_MIN,
    Fp8Table,
    VectorCodec,
    make_codec,
    state_from_bytes,
    state_to_bytes,
)
from memos.codecs._float8 import load_fp8_table
from memos.codecs._fp8 import decode_fp8
from memos.codecs._pca import uncentred_pca
from memos.errors import InvalidInput
from memos.plaintext._vector_index import VectorIndex

ALL_CODECS = ("fp32", "fp16", "fp8", "int8", "pca16+fp8")


def unit_rows(n: int, dim: int = 16, seed: int = 0, offset: float = 0.0) -> NDArray[np.float32]:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32) + offset
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def fitted(name: str, sample: NDArray[np.float32]) -> VectorCodec:
    codec = make_codec(name)
    if not codec.fit_min:
        return codec
    blob = state_to_bytes(codec.name, codec.fit(sample))
    return make_codec(codec.name, state_from_bytes(codec.name, blob))


# names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("fp32", "fp32"),
        ("fp16", "fp16"),
        ("fp8", "fp8"),
        ("int8", "int8"),
        ("pca192+fp8", "pca192+fp8"),
        ("pca0192+fp8", "pca192+fp8"),
        ("pca7+fp8", "pca7+fp8"),
    ],
)
def test_codec_names(name: str, canonical: str) -> None:
    assert make_codec(name).name == canonical


@pytest.mark.parametrize(
    "name", ["", "fp64", "pca+fp8", "pca0+fp8", "pca-3+fp8", "pca192", "PCA192+fp8", "fp8 "]
)
def test_unknown_codec_names_are_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInput, match="unknown codec"):
        make_codec(name)


def test_which_codecs_are_fitted() -> None:
    assert [make_codec(n).fit_min for n in ("fp32", "fp16", "fp8")] == [0, 0, 0]
    assert make_codec("int8").fit_min == FIT_MIN
    assert make_codec("pca192+fp8").fit_min == FIT_MIN
    assert make_codec("pca2048+fp8").fit_min == 2048
    for name in ("int8", "pca8+fp8"):
        codec = make_codec(name)
        # unfitted: exact fp32 tables
        assert (codec.fitted, codec.exact, codec.bytes_per_vector(16)) == (False, True, 64.0)
    with pytest.raises(InvalidInput):
        make_codec("fp8").fit(unit_rows(10))


def test_a_projection_wider_than_the_vectors_is_invalid() -> None:
    assert make_codec("pca16+fp8").projected_dim(16) == 16
    with pytest.raises(InvalidInput, match="cannot project"):
        make_codec("pca17+fp8").projected_dim(16)


def test_a_codec_takes_only_its_own_state() -> None:
    state = make_codec("pca4+fp8").fit(unit_rows(50))
    with pytest.raises(ValueError, match="takes no fitted state"):
        make_codec("fp16", state)
    with pytest.raises(ValueError, match="expected"):
        make_codec("int8", state)
    with pytest.raises(ValueError, match="projection"):
        make_codec("pca5+fp8", state)
    bad = {"projection": state["projection"].astype(np.float64)}
    with pytest.raises(ValueError, match="float32"):
        make_codec("pca4+fp8", bad)  # type: ignore[arg-type]
    nan = {"projection": np.full_like(state["projection"], np.nan)}
    with pytest.raises(ValueError, match="finite"):
        make_codec("pca4+fp8", nan)


# fitted states --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["int8", "pca8+fp8"])
def test_state_bytes_round_trip_and_are_deterministic(name: str) -> None:
    codec = make_codec(name)
    sample = unit_rows(300)
    blob = state_to_bytes(codec.name, codec.fit(sample))
    # fitting the same sample again gives the same bytes, so the same content address
    assert state_to_bytes(codec.name, codec.fit(sample)) == blob
    state = state_from_bytes(codec.name, blob)
    assert all(array.dtype == np.float32 for array in state.values())
    assert not blob.startswith(b"\x80")  # safetensors, not a pickle
    with pytest.raises(ValueError, match="not a state of codec"):
        state_from_bytes("pca9+fp8", blob)
    for garbage in (b"", b"\x00" * 8, blob[:-10], b"not safetensors at all"):
        with pytest.raises(ValueError, match=r"codec state|not a state"):
            state_from_bytes(codec.name, garbage)


def test_pca_is_uncentred_and_spans_the_top_singular_vectors() -> None:
    # a large shared offset: the mean direction dominates, as in real embeddings
    sample = unit_rows(400, dim=12, offset=1.5)
    projection = uncentred_pca(sample, 4)
    assert projection.shape == (12, 4)
    np.testing.assert_allclose(projection.T @ projection, np.eye(4), atol=1e-5)
    _, _, vt = np.linalg.svd(sample.astype(np.float64), full_matrices=False)
    top = vt[:4].T
    # the same subspace as the top-4 right singular vectors of the raw (uncentred) sample
    np.testing.assert_allclose(top @ (top.T @ projection), projection, atol=1e-4)
    mean = sample.mean(axis=0)
    kept = np.linalg.norm(mean @ projection) / np.linalg.norm(mean)
    assert kept > 0.99  # a centred PCA would not keep the mean direction


# tables ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_CODECS)
def test_tables_keep_positions_through_removals(name: str, tmp_path: Path) -> None:
    vectors = unit_rows(1200)
    codec = fitted(name, vectors)
    table = codec.new_table(16)
    live = list(range(1200))
    table.add(vectors[:700])
    table.add(vectors[700:])
    gone = np.array([0, 5, 6, 500, 1199], dtype=np.int64)
    table.remove(gone)
    live = [i for i in live if i not in set(gone.tolist())]
    assert len(table) == len(live)
    for query_row in (3, 600, 1100):
        _, positions = table.search(vectors[query_row], 1)
        assert live[int(positions[0])] == query_row
    allowed = np.array([1, 2, 900], dtype=np.int64)
    _, positions = table.search(vectors[live[900]], 3, allowed)
    assert set(positions.tolist()) <= {1, 2, 900}
    assert int(positions[0]) == 900
    table.save(tmp_path / "t.codes")
    loaded = codec.load_table(tmp_path / "t.codes", 16)
    assert len(loaded) == len(table)
    for row in (7, 300):
        np.testing.assert_array_equal(
            loaded.search(vectors[row], 5)[1], table.search(vectors[row], 5)[1]
        )


def test_fp8_table_grows_geometrically_and_compacts_in_order() -> None:
    vectors = unit_rows(1000)
    table = Fp8Table(16)
    reallocations = 0
    buffer = table.codes.base
    for row in vectors:
        table.add(row[None, :])
        if table.codes.base is not buffer:
            reallocations, buffer = reallocations + 1, table.codes.base
    assert len(table) == 1000
    assert reallocations <= 5  # 64 -> 128 -> ... -> 1024: amortised appends, not a copy per add
    assert table.nbytes == 1000 * (16 + 4)
    before_codes, before_scales = table.codes.copy(), table.scales.copy()
    gone = np.array([0, 2, 500, 999], dtype=np.int64)
    table.remove(gone)
    keep = np.setdiff1d(np.arange(1000), gone)
    np.testing.assert_array_equal(table.codes, before_codes[keep])
    np.testing.assert_array_equal(table.scales, before_scales[keep])
    table.remove(np.arange(10, 996, dtype=np.int64))
    assert len(table) == 10
    assert table.nbytes == 10 * 20
    assert len(table._scales) < 1000  # the buffer shrinks after a large removal


def test_fp8_codes_round_trip_within_e4m3_precision() -> None:
    vectors = unit_rows(500, dim=64)
    table = Fp8Table(64)
    table.add(vectors)
    decoded = decode_fp8(table.codes, table.scales)
    # e4m3 keeps 3 mantissa bits: a relative error of at most 2^-4 per component, and at most
    # half the subnormal spacing (2^-10 of the scale) for components below 2^-6 of it
    bound = np.abs(vectors) / 16 + table.scales[:, None] * 2.0**-10
    assert np.all(np.abs(decoded - vectors) <= bound * 1.0001)
    cosines = np.sum(decoded * vectors, axis=1) / np.linalg.norm(decoded, axis=1)
    assert cosines.min() > 0.998
    # the scan scores exactly what the decoded vectors give
    scores, positions = table.search(vectors[3], 500)
    np.testing.assert_allclose(scores, (decoded @ vectors[3])[positions], rtol=1e-5, atol=1e-6)


def _write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "not_safetensors",
        "wrong_dim",
        "codes_dtype",
        "scales_dtype",
        "scales_length",
        "extra_tensor",
        "nan_scale",
        "wrong_format",
    ],
)
def test_fp8_table_files_are_checked_on_load(damage: str, tmp_path: Path) -> None:
    table = Fp8Table(16)
    table.add(unit_rows(20))
    path = tmp_path / "t.codes"
    table.save(path)
    codes, scales = table.codes.copy(), table.scales.copy()
    meta = {"format": "memos-fp8-table", "dim": "16"}
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "not_safetensors":
        path.write_bytes(b"\x80\x04\x95 a pickle is never loaded")
    elif damage == "wrong_dim":
        _write(path, {"codes": codes[:, :8].copy(), "scales": scales}, {**meta, "dim": "8"})
    elif damage == "codes_dtype":
        _write(path, {"codes": codes.astype(np.int16), "scales": scales}, meta)
    elif damage == "scales_dtype":
        _write(path, {"codes": codes, "scales": scales.astype(np.float64)}, meta)
    elif damage == "scales_length":
        _write(path, {"codes": codes, "scales": scales[:-1].copy()}, meta)
    elif damage == "extra_tensor":
        _write(path, {"codes": codes, "scales": scales, "x": scales}, meta)
    elif damage == "nan_scale":
        scales[3] = np.nan
        _write(path, {"codes": codes, "scales": scales}, meta)
    elif damage == "wrong_format":
        _write(path, {"codes": codes, "scales": scales}, {**meta, "format": "other"})
    with pytest.raises(ValueError, match="fp8 table"):
        load_fp8_table(path, 16)


# real embeddings (slow) -----------------------------------------------------------------------


@dataclass(frozen=True)
class RealVectors:
    texts: list[str]
    base: NDArray[np.float32]  # the memories
    queries: NDArray[np.float32]  # held-out questions about the chats


def chat_texts(turns: int, questions: int) -> tuple[list[str], list[str]]:
    """Unique dialogue turns and questions, in conversation order."""
    samples = chat_samples()
    seen: set[str] = set()
    found: list[str] = []
    for sample in samples:
        conversation = sample["conversation"]
        for key in sorted(k for k in conversation if k.startswith("session_") and k[8:].isdigit()):
            for turn in conversation[key]:
                text = str(turn["text"]).strip()
                if text and text not in seen:
                    seen.add(text)
                    found.append(text)
    asked = [str(qa["question"]) for sample in samples for qa in sample["qa"]]
    return found[:turns], list(dict.fromkeys(asked))[:questions]


@pytest.fixture(scope="module")
def real() -> RealVectors:
    turns, questions = chat_texts(1500, 200)
    embedder = MiniLMEmbedder()
    vectors = embedder.embed([*turns, *questions])
    return RealVectors(turns, vectors[: len(turns)], vectors[len(turns) :])


def recall_at(found: Sequence[Sequence[int]], exact: Sequence[Sequence[int]]) -> float:
    hits = sum(len(set(f) & set(e)) for f, e in zip(found, exact, strict=True))
    return hits / sum(len(e) for e in exact)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "bytes_per_vector", "raw_floor"),
    [
        ("fp16", 768, 0.99),
        ("fp8", 388, 0.95),
        ("int8", 384, 0.95),
        ("pca192+fp8", 196, 0.80),
    ],
)
def test_recall_on_real_embeddings(
    real: RealVectors, name: str, bytes_per_vector: int, raw_floor: float
) -> None:
    k = 10
    codec = fitted(name, real.base)
    assert codec.fitted
    index = VectorIndex(codec, 384)
    ids = [f"t{i}" for i in range(len(real.base))]
    index.upsert(ids, real.base)
    by_id = dict(zip(ids, real.base, strict=True))

    def exact_vectors(wanted: Sequence[str]) -> dict[str, NDArray[np.float32]]:
        return {i: by_id[i] for i in wanted}

    truth = [np.argsort(-(real.base @ q), kind="stable")[:k].tolist() for q in real.queries]
    table = index._table
    raw = [table.search(q, k)[1].tolist() for q in real.queries]
    reranked = [
        [int(i[1:]) for i, _ in index.search(q, k, exact=exact_vectors)] for q in real.queries
    ]
    raw_recall, rerank_recall = recall_at(raw, truth), recall_at(reranked, truth)
    print(f"{name}: raw recall@10 {raw_recall:.3f}, re-ranked {rerank_recall:.3f}")
    assert raw_recall >= raw_floor
    assert rerank_recall >= 0.99
    assert index.nbytes / len(index) == bytes_per_vector


@pytest.mark.slow
def test_half_dimension_pca_keeps_most_of_real_embeddings(real: RealVectors) -> None:
    codec = make_codec("pca192+fp8")
    projection = codec.fit(real.base)["projection"]
    reconstructed = (real.queries @ projection) @ projection.T
    # held-out questions keep most of their length in the subspace fitted on the turns
    kept = np.linalg.norm(reconstructed, axis=1) / np.linalg.norm(real.queries, axis=1)
    assert np.median(kept) > 0.9
    pairs = real.queries @ real.base[:200].T
    projected = (real.queries @ projection) @ (real.base[:200] @ projection).T
    assert np.corrcoef(pairs.ravel(), projected.ravel())[0, 1] > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fp8", "int8", "pca192+fp8"])
def test_codes_round_trip_real_embeddings_through_a_file(
    real: RealVectors, name: str, tmp_path: Path
) -> None:
    codec = fitted(name, real.base)
    table = codec.new_table(384)
    table.add(real.base)
    table.save(tmp_path / "codes")
    loaded = codec.load_table(tmp_path / "codes", 384)
    for query in real.queries[:20]:
        scores, positions = table.search(query, 10)
        again_scores, again_positions = loaded.search(query, 10)
        np.testing.assert_array_equal(positions, again_positions)
        np.testing.assert_array_equal(scores, again_scores)


class PrecomputedMiniLM:
    """Serves the real MiniLM vectors computed once for this module, by text."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, texts: Sequence[str], vectors: NDArray[np.float32]) -> None:
        self._by_text = dict(zip(texts, vectors, strict=True))

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return np.stack([self._by_text[t] for t in texts]).astype(np.float32)


@pytest.mark.slow
def test_a_real_pca_cube_end_to_end(real: RealVectors, tmp_path: Path) -> None:
    """Fitted on reaching 1000 real memories, searched with exact re-rank, exported and
    imported (identical answers), then re-encoded to fp8 without losing a memory."""
    turns, questions = chat_texts(len(real.base), len(real.queries))
    embedder = PrecomputedMiniLM([*turns, *questions], np.concatenate([real.base, real.queries]))
    with MemOS.open(tmp_path / "a", embedder=embedder) as mos:
        mos.create_cube("talk", codec="pca192+fp8")
        added = mos.add_many(turns[:1000], cube="talk")
        assert mos.cube_stats("talk").fitted
        added += mos.add_many(turns[1000:], cube="talk")  # encoded with the fitted projection
        stats = mos.cube_stats("talk")
        assert (stats.items_active, stats.projected_dim) == (len(turns), 192)
        assert stats.ram_bytes_per_vector == 196
        ids = [item.id for item in added]
        truth = [[ids[j] for j in np.argsort(-(real.base @ q))[:10]] for q in real.queries]
        answers = [
            [hit.item.id for hit in mos.search(question, cube="talk", k=10, mode="dense")]
            for question in questions
        ]
        assert recall_at(answers, truth) >= 0.99
        exported = mos.export_cube("talk", tmp_path / "export")
        mos.reencode("talk", codec="fp8")
        assert mos.cube_stats("talk").index_vectors == len(turns)
        after = [
            [h.item.id for h in mos.search(q, cube="talk", k=10, mode="dense")] for q in questions
        ]
        assert recall_at(after, truth) >= 0.99
        assert mos.verify("talk").ok
    with MemOS.open(tmp_path / "b", embedder=embedder) as other:
        other.import_cube(exported)
        again = [
            [h.item.id for h in other.search(q, cube="talk", k=10, mode="dense")] for q in questions
        ]
        assert again == answers
