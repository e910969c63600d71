"""Embeddings both ways: ``MemOSEmbeddings`` through LangChain's standard embeddings suites,
and ``LangChainEmbedder`` as the embedder of cubes searched embedded and over HTTP.

The standard suites (``EmbeddingsUnitTests``, ``EmbeddingsIntegrationTests``) run whole on
the deterministic ``hash-64`` embedder; nothing is turned off. ``test_init_from_env`` checks
nothing here: MemOS reads no settings from the environment in a library class (settings are
read once at the edge), so ``init_from_env_params`` is left empty. They have no HTTP variant:
a handle offers no embedding operation, so ``MemOSEmbeddings`` always embeds in-process; the
HTTP side is a server whose cubes embed through a LangChain model, below.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _langchain import FACES, fresh_cube, principal
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from memos import Embedder, HashEmbedder
from memos.errors import InvalidInput
from memos.integrations.langchain import LangChainEmbedder, MemOSEmbeddings


class TestMemOSEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return MemOSEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embedder": "hash-64"}


class TestMemOSEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return MemOSEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embedder": HashEmbedder(64)}


def test_memos_embeddings_are_the_embedders_vectors() -> None:
    embeddings = MemOSEmbeddings("hash-64")
    expected = HashEmbedder(64).embed(["Alice moved to Lisbon"])[0]
    assert np.allclose(embeddings.embed_query("Alice moved to Lisbon"), expected)
    assert embeddings.embed_documents([]) == []
    assert embeddings.name == "hash-64"
    with pytest.raises(InvalidInput):
        MemOSEmbeddings("no-such-model")


@pytest.mark.slow
def test_the_default_is_the_bundled_minilm() -> None:
    embeddings = MemOSEmbeddings()
    cat, kitten, stocks = embeddings.embed_documents(["a cat", "a kitten", "stock prices"])
    assert (embeddings.name, len(cat)) == ("all-MiniLM-L6-v2", 384)
    assert np.dot(cat, kitten) > np.dot(cat, stocks)


# any LangChain Embeddings as a cube's embedder ----------------------------------------------


def test_a_langchain_model_is_a_memos_embedder() -> None:
    embedder = LangChainEmbedder(DeterministicFakeEmbedding(size=12), name="fake-12")
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dim) == ("fake-12", 12)  # measured once
    vectors = embedder.embed(["one", "two"])
    assert vectors.shape == (2, 12)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert embedder.embed([]).shape == (0, 12)
    with pytest.raises(InvalidInput):
        LangChainEmbedder(DeterministicFakeEmbedding(size=12), name="")


def test_a_model_that_breaks_its_dimension_is_refused() -> None:
    embedder = LangChainEmbedder(DeterministicFakeEmbedding(size=12), name="fake", dim=8)
    with pytest.raises(InvalidInput, match="shape"):
        embedder.embed(["one"])


@pytest.fixture(params=FACES)
def alice(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    # the same vectors as the hash-64 embedder, made by a LangChain model
    embedder = LangChainEmbedder(MemOSEmbeddings("hash-64"), name="lc-hash-64")
    with principal(request.param, tmp_path_factory.mktemp("data"), embedder=embedder) as handle:
        yield handle


def test_cubes_are_built_and_searched_with_the_langchain_model(alice: Any) -> None:
    cube = fresh_cube(alice)
    info = alice.get_cube(cube)
    assert (info.embedder, info.dim) == ("lc-hash-64", 64)
    alice.add_many(
        ["the cat sat on the mat", "stock prices fell", "a cat chased a mouse"], cube=cube
    )
    hits = alice.search("cat", cube=cube, k=2, mode="dense")
    assert {h.item.text for h in hits} == {"the cat sat on the mat", "a cat chased a mouse"}
    query = HashEmbedder(64).embed(["cat"])[0]
    assert hits[0].score == pytest.approx(
        float(np.dot(query, HashEmbedder(64).embed([hits[0].item.text])[0])), abs=1e-5
    )


def test_import_memos_leaves_langchain_unloaded() -> None:
    code = "import sys, memos; print('langchain_core' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_integration_pins_its_surface() -> None:
    import memos.integrations.langchain as integration

    assert set(integration.__all__) == {
        "ID_KEY",
        "ChatMemOS",
        "LangChainEmbedder",
        "MemOSChatMessageHistory",
        "MemOSEmbeddings",
        "MemOSRetriever",
        "MemOSVectorStore",
    }
