"""The torch-free MiniLM path: the same vectors as sentence-transformers, without its import."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from memos import MiniLMEmbedder
from memos.embedding._minilm import MAX_SEQ_LENGTH, SMALL_BATCH, model_dir

TEXTS = [
    "Alice moved to Lisbon in May 2023",
    "  leading and trailing whitespace \n\t",
    "",
    " ",
    "naïve café in Zürich, 東京 and 日本語のテキスト 🎉",
    "Ελληνικά κείμενα και русский текст",
    "zero\u200bwidth and\u00a0no-break spaces",
    "ß ﬁ ligatures Ǆ and CAPITALS MiXeD",
    "tab\tseparated\ttext",
    "word " * 300,  # truncated at the model's 256 tokens
    "The quick brown fox jumps over the lazy dog. " * 40,
    "a" * 500,  # one word longer than WordPiece splits: [UNK]
]


@pytest.fixture(scope="module")
def reference() -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray((a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


@pytest.mark.slow
def test_numpy_vectors_equal_sentence_transformers(reference: Any) -> None:
    assert len(TEXTS) <= SMALL_BATCH
    ours = MiniLMEmbedder(batch_size=4).embed(TEXTS)
    theirs = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.dtype == np.float32
    assert ours.shape == (len(TEXTS), 384)
    assert _cosines(ours, theirs).min() >= 0.9999
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_large_batches_go_through_torch_with_the_same_vectors() -> None:
    model = MiniLMEmbedder()
    large = [f"{text} ({n})" for n in range(3) for text in TEXTS]
    assert len(large) > SMALL_BATCH
    batched = model.embed(large)
    singles = np.concatenate([model.embed(large[i : i + 4]) for i in range(0, len(large), 4)])
    assert _cosines(batched, singles).min() >= 0.9999


_SMALL_EMBED = """
import sys
from memos import MiniLMEmbedder
vectors = MiniLMEmbedder().embed(["Alice moved to Lisbon", "Bob prefers tea"])
assert vectors.shape == (2, 384)
heavy = sorted({"torch", "sentence_transformers", "transformers"} & set(sys.modules))
print(",".join(heavy) or "none")
"""


@pytest.mark.slow
def test_a_small_batch_never_imports_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SMALL_EMBED], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
