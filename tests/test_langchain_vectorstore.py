"""``MemOSVectorStore``: LangChain's standard vector store suite, embedded and over HTTP, and
what the store adds (audited updates, filters, scores, the cube seen through the SDK).

The standard suite (``VectorStoreIntegrationTests``) runs whole on both faces: nothing is
turned off. Its embeddings (``DeterministicFakeEmbedding``, 6 dimensions) are the cube's
embedder through :class:`LangChainEmbedder`, on the server too; each test gets a new, empty
cube of one handle made per class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _langchain import FACES, fresh_cube, principal
from langchain_core.documents import Document
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from memos import EventOp, ItemStatus
from memos.errors import InvalidInput
from memos.integrations.langchain import ID_KEY, LangChainEmbedder, MemOSVectorStore


def fake_embedder() -> LangChainEmbedder:
    return LangChainEmbedder(VectorStoreIntegrationTests.get_embeddings(), name="lc-fake-6")


@pytest.fixture(scope="class")
def class_alice(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """Alice's handle on the face the test class names, for all its tests."""
    directory = tmp_path_factory.mktemp("data")
    with principal(request.cls.face, directory, embedder=fake_embedder()) as handle:
        yield handle


class TestEmbeddedVectorStore(VectorStoreIntegrationTests):
    face = "sqlite"

    @pytest.fixture
    def vectorstore(self, class_alice: Any) -> VectorStore:
        cube = fresh_cube(class_alice)
        return MemOSVectorStore(class_alice, cube, embedding=self.get_embeddings())


class TestHTTPVectorStore(TestEmbeddedVectorStore):
    face = "sqlite-http"


# what the store adds, on both faces ---------------------------------------------------------


@pytest.fixture(scope="module", params=FACES)
def alice(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("data")
    with principal(request.param, directory, embedder=fake_embedder()) as handle:
        yield handle


@pytest.fixture
def store(alice: Any) -> MemOSVectorStore:
    return MemOSVectorStore(alice, fresh_cube(alice), user="alice")


def test_an_overwrite_by_id_is_a_new_version_that_rolls_back(store: MemOSVectorStore) -> None:
    alice = store.handle
    store.add_texts(["Alice lives in Lisbon"], [{"source": "chat"}], ids=["home"])
    store.add_texts(["Alice lives in Lisbon"], [{"source": "chat"}], ids=["home"])  # unchanged
    store.add_texts(["Alice lives in Porto"], [{"source": "chat"}], ids=["home"])
    (doc,) = store.get_by_ids(["home"])
    item = alice.search("Alice", cube=store.cube, k=1, where={ID_KEY: "home"})[0].item
    assert (doc.page_content, item.version, item.metadata[ID_KEY]) == (
        "Alice lives in Porto",
        2,
        "home",
    )
    ops = [e.op for e in alice.log(store.cube)]
    assert ops == [EventOp.CUBE_CREATE, EventOp.CREATE, EventOp.UPDATE]
    alice.rollback(item.id, to_version=1, reason="wrong city")
    assert store.get_by_ids(["home"])[0].page_content == "Alice lives in Lisbon"


def test_delete_marks_the_memory_deleted_and_keeps_its_history(store: MemOSVectorStore) -> None:
    (memory_id,) = store.add_texts(["a note without an id"])
    assert store.get_by_ids([memory_id])[0].id == memory_id  # the memory's own id
    assert store.delete([memory_id, "never-added"])
    assert store.get_by_ids([memory_id]) == []
    assert store.handle.get(memory_id).status == ItemStatus.DELETED
    with pytest.raises(InvalidInput):
        store.delete()


def test_search_filters_scores_and_relevance(store: MemOSVectorStore) -> None:
    store.add_texts(
        ["red apple", "green apple", "red car"],
        [{"color": "red", "kind": "fruit"}, {"color": "green"}, {"color": "red"}],
        ids=["a", "b", "c"],
    )
    reds = store.similarity_search("apple", k=5, filter={"color": "red"})
    assert {d.id for d in reds} == {"a", "c"}
    scored = store.similarity_search_with_score("red car", k=3)
    assert scored[0][0] == Document(id="c", page_content="red car", metadata={"color": "red"})
    assert scored[0][1] == pytest.approx(1.0, abs=1e-5)  # the same text: cosine 1
    assert [s for _, s in scored] == sorted((s for _, s in scored), reverse=True)
    relevant = store.similarity_search_with_relevance_scores("red car", k=1)
    assert relevant[0][1] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InvalidInput):
        store.similarity_search("apple", k=1, colour="red")


def test_keyword_mode_and_the_retriever(store: MemOSVectorStore) -> None:
    store.add_texts(["invoice INV-2024-7 paid", "lunch with Bob"], ids=["inv", "lunch"])
    words = MemOSVectorStore(store.handle, store.cube, mode="keyword")
    assert [d.id for d in words.similarity_search("INV-2024-7", k=2)] == ["inv"]
    with pytest.raises(InvalidInput):
        words.similarity_search_with_relevance_scores("INV", k=1)
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert [d.id for d in retriever.invoke("lunch with Bob")] == ["lunch"]


async def test_async_calls_reach_the_same_cube(store: MemOSVectorStore) -> None:
    ids = await store.aadd_texts(["one", "two"], ids=["1", "2"])
    assert [d.id for d in await store.aget_by_ids(ids)] == ["1", "2"]
    assert await store.adelete(["1"])
    assert [d.id for d in await store.asimilarity_search("one", k=5)] == ["2"]


def test_from_texts_needs_a_handle_and_a_cube(alice: Any) -> None:
    embeddings = VectorStoreIntegrationTests.get_embeddings()
    with pytest.raises(InvalidInput):
        MemOSVectorStore.from_texts(["x"], embeddings)
    made = MemOSVectorStore.from_texts(["x"], embeddings, handle=alice, cube=fresh_cube(alice))
    assert made.embeddings is embeddings
    assert [d.page_content for d in made.similarity_search("x", k=1)] == ["x"]


def test_one_id_twice_in_a_call_is_one_memory(store: MemOSVectorStore) -> None:
    ids = store.add_texts(["first", "plain", "second"], ids=["twice", None, "twice"])  # type: ignore[list-item]
    assert ids[0] == ids[2] == "twice"
    assert [d.page_content for d in store.get_by_ids(["twice"])] == ["second"]
    assert len(store.similarity_search("first", k=5)) == 2
