"""``MemOSRetriever``: LangChain's standard retriever suite, embedded and over HTTP, and the
documents it returns (memory id, version and score in the metadata; filters; async).

The standard suite (``RetrieversIntegrationTests``) runs whole on both faces: nothing is
turned off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _langchain import FACES, fresh_cube, principal
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from memos import HashEmbedder
from memos.errors import InvalidInput
from memos.integrations.langchain import MemOSRetriever

NOTES = [
    {"text": "Alice moved to Lisbon in May 2023", "user": "alice", "tags": ["travel"]},
    {"text": "Alice adopted a collie called Pixel", "user": "alice", "tags": ["pets"]},
    {"text": "Bob moved to Porto", "user": "bob", "tags": ["travel"]},
    {"text": "Bob's sister lives in Lisbon", "user": "bob", "metadata": {"source": "email"}},
]


@pytest.fixture(scope="class")
def notes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    """A handle on the face the test class names, and a cube of ``NOTES``."""
    directory = tmp_path_factory.mktemp("data")
    with principal(request.cls.face, directory, embedder=HashEmbedder(64)) as alice:
        cube = fresh_cube(alice)
        alice.add_many(NOTES, cube=cube)
        yield alice, cube


class TestEmbeddedRetriever(RetrieversIntegrationTests):
    face = "sqlite"

    @pytest.fixture(autouse=True)
    def _cube(self, notes: tuple[Any, str]) -> None:
        self.handle, self.cube = notes

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return MemOSRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"handle": self.handle, "cube": self.cube}

    @property
    def retriever_query_example(self) -> str:
        return "where did Alice move?"


class TestHTTPRetriever(TestEmbeddedRetriever):
    face = "sqlite-http"


# the documents, on both faces ---------------------------------------------------------------


@pytest.fixture(scope="module", params=FACES)
def face_notes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    directory = tmp_path_factory.mktemp("data")
    with principal(request.param, directory, embedder=HashEmbedder(64)) as alice:
        cube = fresh_cube(alice)
        alice.add_many(NOTES, cube=cube)
        yield alice, cube


def test_documents_name_their_memory_version_and_score(face_notes: tuple[Any, str]) -> None:
    alice, cube = face_notes
    retriever = MemOSRetriever(handle=alice, cube=cube, k=2, mode="dense")
    docs = retriever.invoke("Alice moved to Lisbon in May 2023")
    hits = alice.search("Alice moved to Lisbon in May 2023", cube=cube, k=2, mode="dense")
    assert [d.id for d in docs] == [h.item.id for h in hits]
    first = docs[0]
    assert first.page_content == "Alice moved to Lisbon in May 2023"
    assert first.metadata["memory_id"] == first.id == hits[0].item.id
    assert first.metadata["version"] == 1
    assert first.metadata["score"] == pytest.approx(hits[0].score)
    assert (first.metadata["cube"], first.metadata["user"]) == (cube, "alice")
    assert first.metadata["tags"] == ["travel"]
    alice.update(first.id, "Alice moved to Porto in June 2023")
    assert retriever.invoke("Alice moved to Porto in June 2023")[0].metadata["version"] == 2
    alice.rollback(first.id, to_version=1)


def test_filters_from_the_constructor_and_per_call(face_notes: tuple[Any, str]) -> None:
    alice, cube = face_notes
    bobs = MemOSRetriever(handle=alice, cube=cube, user="bob", k=5)
    assert {d.metadata["user"] for d in bobs.invoke("Lisbon")} == {"bob"}
    travel = bobs.invoke("moved", user=None, tags=["travel"])
    assert {d.page_content for d in travel} == {
        "Alice moved to Lisbon in May 2023",
        "Bob moved to Porto",
    }
    email = bobs.invoke("Lisbon", where={"source": "email"}, mode="keyword")
    assert [d.metadata["source"] for d in email] == ["email"]
    with pytest.raises(InvalidInput):
        bobs.invoke("Lisbon", colour="red")


async def test_async_search_is_the_same_search(face_notes: tuple[Any, str]) -> None:
    alice, cube = face_notes
    retriever = MemOSRetriever(handle=alice, cube=cube, k=3)
    assert await retriever.ainvoke("Pixel the collie") == retriever.invoke("Pixel the collie")
    assert len(await retriever.ainvoke("Pixel", k=1)) == 1
