"""The local model backend: loading, fingerprints and greedy generation.

Most tests use a tiny randomly initialised Llama with a word-level tokenizer built here, so
they take milliseconds; one test converts and runs the real bundled SmolLM2-135M-Instruct.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _models import model_cache, tiny_model_dir

from memos.errors import ModelUnavailable
from memos.llm import LocalModel, bundled_gguf, fingerprint, materialized_gguf


def test_tiny_model_loads_renders_and_generates_greedily(tmp_path: Path) -> None:
    model = LocalModel.load(tiny_model_dir(tmp_path), cache_dir=tmp_path / "cache")
    ids = model.chat_ids([{"role": "user", "content": "where is alice"}])
    assert ids[-1] == model.tokenizer.convert_tokens_to_ids("<assistant>")
    first = model.generate(ids, max_new_tokens=6)
    assert 0 < len(first) <= 6
    assert model.generate(ids, max_new_tokens=6) == first


def test_fingerprint_names_weights_and_tokenizer(tmp_path: Path) -> None:
    same_a = fingerprint(tiny_model_dir(tmp_path / "a", seed=1))
    same_b = fingerprint(tiny_model_dir(tmp_path / "b", seed=1))
    other = fingerprint(tiny_model_dir(tmp_path / "c", seed=2))
    assert same_a == same_b
    assert other.weights_sha256 != same_a.weights_sha256
    assert other.tokenizer_sha256 == same_a.tokenizer_sha256


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable):
        LocalModel.load(tmp_path, cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_bundled_smollm2_converts_once_and_answers(request: pytest.FixtureRequest) -> None:
    cache = model_cache(request.config)
    gguf = bundled_gguf()
    assert gguf.suffix == ".gguf"
    directory = materialized_gguf(gguf, cache)
    assert materialized_gguf(gguf, cache) == directory
    assert (directory / "model.safetensors").stat().st_size > 400 * 2**20
    model = LocalModel.load(gguf, cache_dir=cache)
    assert model.fingerprint == fingerprint(directory)
    ids = model.chat_ids([{"role": "user", "content": "What is the capital of France?"}])
    answer = model.decode(model.generate(ids, max_new_tokens=12))
    assert "Paris" in answer
