"""Embedders: the deterministic one for logic tests and the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest

from memos import Embedder, HashEmbedder, MiniLMEmbedder
from memos.embedding import make_embedder
from memos.errors import InvalidInput


def test_hash_embedder_is_deterministic_and_normalised() -> None:
    model = HashEmbedder(64)
    a = model.embed(["Alice lives in Lisbon", "", "Alice lives in Lisbon"])
    assert a.shape == (3, 64)
    assert a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a[0], a[2])
    near, far = model.embed(["Alice lives in Porto", "quarterly tax report"])
    assert float(a[0] @ near) > float(a[0] @ far)


def test_registry_names_embedders() -> None:
    assert make_embedder("hash-16").dim == 16
    assert isinstance(make_embedder("minilm"), MiniLMEmbedder)
    with pytest.raises(InvalidInput):
        make_embedder("no-such-model")
    assert isinstance(HashEmbedder(8), Embedder)


@pytest.mark.slow
def test_minilm_sorting_by_length_keeps_each_text_its_own_vector() -> None:
    texts = [
        "short",
        "a considerably longer sentence about the migration of memories between tiers",
        "medium length text here",
        "x " * 200,
        "short",
    ]
    model = MiniLMEmbedder(batch_size=2)
    batched = model.embed(texts)
    singles = np.stack([model.embed([t])[0] for t in texts])
    assert batched.shape == (5, 384)
    np.testing.assert_allclose(batched, singles, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(batched[0], batched[4], atol=1e-6)
    assert model.embed([]).shape == (0, 384)
