"""A cube as a LangChain vector store.

A document is a memory: its text is the memory's text and its metadata the memory's metadata
(flat: strings, numbers, booleans or null). A document added with an id keeps that id in the
memory's metadata under :data:`ID_KEY`; one added without gets the memory's own id. Adding a
document whose id the cube already holds updates that memory (a new version, one ``update``
event, none when nothing changed), and deleting one marks the memory deleted: both stay in
the cube's history and can be rolled back. Works over an embedded ``MemOS`` and over
``MemOS.connect`` alike; the vectors are the cube's own embedder's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from memos.core._types import ItemStatus, MemoryItem, SearchHit
from memos.engine._handle import Handle
from memos.errors import InvalidInput, NotFound

ID_KEY = "langchain_id"
"""The metadata key that keeps the id a document was added with."""

# a memory id: 32 hex digits (see memos.core._mutations.new_item_id)
_MEMORY_ID_LENGTH = 32


class MemOSVectorStore(VectorStore):
    """The cube ``cube`` of ``handle`` (``MemOS.open(...)`` or ``MemOS.connect(...)``) as a
    LangChain vector store; see the module docstring.

    ``mode`` is the search mode (``"dense"`` by default: scores are cosine similarities;
    ``"hybrid"`` or ``"keyword"`` rank as ``mos.search`` does). ``user`` is whose memories the
    added documents are, and whom the log names for every change. ``embedding`` is what
    :attr:`embeddings` reports (the cube's embedder does the embedding, on the server when
    the handle is remote)."""

    def __init__(
        self,
        handle: Handle,
        cube: str,
        *,
        user: str | None = None,
        mode: str = "dense",
        embedding: Embeddings | None = None,
    ) -> None:
        self.handle = handle
        self.cube = cube
        self.user = user
        self.mode = mode
        self._embedding = embedding
        self._cube_name: str | None = None

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        handle: Handle | None = None,
        cube: str | None = None,
        **kwargs: Any,
    ) -> MemOSVectorStore:
        """A store over ``cube`` of ``handle`` (both required) with ``texts`` added."""
        if handle is None or cube is None:
            raise InvalidInput("MemOSVectorStore.from_texts needs handle= and cube=")
        store = cls(handle, cube, embedding=embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # writing ---------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add each text as a memory, or update the memory that holds its id; the ids, in
        order (a memory's own id where none was given)."""
        texts = list(texts)
        metas = [dict(m) for m in metadatas] if metadatas is not None else [{}] * len(texts)
        given = list(ids) if ids is not None else [None] * len(texts)
        if not len(texts) == len(metas) == len(given):
            raise InvalidInput("add_texts takes one metadata and one id per text, or none")
        if not texts:
            return []
        out: list[str | None] = list(given)
        new: dict[str | int, dict[str, Any]] = {}  # by id (the last text of one id wins)
        for position, (text, meta, doc_id) in enumerate(zip(texts, metas, given, strict=True)):
            if doc_id is not None and doc_id not in new and self._revise(doc_id, text, meta):
                continue
            record_meta = meta if doc_id is None else {**meta, ID_KEY: doc_id}
            new[position if doc_id is None else doc_id] = {"text": text, "metadata": record_meta}
        if new:
            added = self.handle.add_many(list(new.values()), cube=self.cube, user=self.user)
            for key, item in zip(new, added, strict=True):
                if isinstance(key, int):
                    out[key] = item.id
        return [doc_id for doc_id in out if doc_id is not None]

    def _revise(self, doc_id: str, text: str, meta: Mapping[str, Any]) -> bool:
        """Update the memory ``doc_id`` names to ``text`` and ``meta``; false when none does."""
        item = self._find(doc_id)
        if item is None:
            return False
        wanted = dict(meta) if ID_KEY not in item.metadata else {**meta, ID_KEY: doc_id}
        if item.text != text or item.metadata != wanted:
            self.handle.update(item.id, text, user=self.user, metadata=wanted,
                               expected_version=item.version)  # fmt: skip
        return True

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Mark the memories of ``ids`` deleted (ids the cube does not hold are passed over);
        ``reason`` goes into the log."""
        if ids is None:
            raise InvalidInput("delete needs the ids of the documents to delete")
        reason = kwargs.get("reason", "deleted through the LangChain vector store")
        for doc_id in ids:
            item = self._find(doc_id)
            if item is not None:
                self.handle.delete(item.id, user=self.user, reason=reason)
        return True

    # reading ---------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents of ``ids`` the cube holds, in the order asked."""
        found = (self._find(doc_id) for doc_id in ids)
        return [as_document(item) for item in found if item is not None]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents with their scores (the mode's, see ``mos.search``).
        ``filter`` matches metadata exactly; ``user``, ``tags``, ``session``, ``since`` and
        ``until`` filter as ``mos.search`` does."""
        hits = self._search(query, k, filter, **kwargs)
        return [(as_document(hit.item), hit.score) for hit in hits]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        if self.mode != "dense":
            raise InvalidInput(f"relevance scores need mode='dense', not {self.mode!r}")
        return cosine_relevance

    def _search(
        self, query: str, k: int, where: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[SearchHit]:
        allowed = {"user", "tags", "session", "since", "until", "mode"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise InvalidInput(f"unknown search arguments: {', '.join(sorted(unknown))}")
        options = {"mode": self.mode, **kwargs}
        return self.handle.search(query, cube=self.cube, k=k, where=where, **options)

    def _find(self, doc_id: str) -> MemoryItem | None:
        """The active memory of this cube that ``doc_id`` names: by :data:`ID_KEY`, else by
        the memory's own id."""
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidInput(f"a document id is a non-empty string, not {doc_id!r}")
        by_key = self.handle.list_memories(cube=self.cube, where={ID_KEY: doc_id}, limit=1)
        if by_key:
            return by_key[0]
        if len(doc_id) != _MEMORY_ID_LENGTH:
            return None
        try:
            item = self.handle.get(doc_id)
        except NotFound:
            return None
        mine = item.cube == self._full_cube_name() and ID_KEY not in item.metadata
        return item if mine and item.status == ItemStatus.ACTIVE else None

    def _full_cube_name(self) -> str:
        if self._cube_name is None:
            self._cube_name = self.handle.get_cube(self.cube).name
        return self._cube_name


def as_document(item: MemoryItem) -> Document:
    """The memory as the document it was added as: its id, text and metadata."""
    metadata = dict(item.metadata)
    doc_id = metadata.pop(ID_KEY, None)
    return Document(
        page_content=item.text,
        metadata=metadata,
        id=item.id if doc_id is None else str(doc_id),
    )


def cosine_relevance(similarity: float) -> float:
    """A cosine similarity (-1 to 1) as a relevance score (0 to 1)."""
    return min(1.0, max(0.0, (1.0 + similarity) / 2.0))
