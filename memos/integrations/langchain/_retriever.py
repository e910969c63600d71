"""Searching a cube as a LangChain retriever: each hit a ``Document`` whose metadata says
which memory (id, version) it is and how well it matched (score), so an answer can cite,
audit or roll back the memory it used."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from memos.core._types import MetadataValue, SearchHit
from memos.engine._handle import Handle
from memos.errors import InvalidInput

# the search arguments a call may override (``retriever.invoke(query, k=3)``)
_PER_CALL = frozenset({"k", "mode", "user", "tags", "session", "since", "until", "where"})


class MemOSRetriever(BaseRetriever):
    """Search the cube ``cube`` of ``handle`` (``MemOS.open(...)`` or ``MemOS.connect(...)``)
    as ``mos.search`` does: ``k`` memories, ``mode`` (``"hybrid"``, ``"dense"`` or
    ``"keyword"``) and the filters ``user``, ``tags``, ``session``, ``since``, ``until`` and
    ``where`` (metadata). Each may be overridden per call: ``retriever.invoke(q, k=3)``.

    A document's ``id`` is the memory's id; its metadata is the memory's metadata with
    ``memory_id``, ``version``, ``score``, ``cube``, ``user`` and ``tags`` added."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    handle: Handle = Field(exclude=True)
    cube: str
    k: int = 5
    mode: str = "hybrid"
    user: str | None = None
    tags: list[str] | None = None
    session: str | None = None
    since: datetime | str | None = None
    until: datetime | str | None = None
    where: dict[str, MetadataValue] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return [hit_document(hit) for hit in self._search(query, kwargs)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        hits = await run_in_executor(None, self._search, query, kwargs)
        return [hit_document(hit) for hit in hits]

    def _search(self, query: str, overrides: dict[str, Any]) -> list[SearchHit]:
        unknown = set(overrides) - _PER_CALL
        if unknown:
            raise InvalidInput(f"unknown search arguments: {', '.join(sorted(unknown))}")
        options: dict[str, Any] = {name: getattr(self, name) for name in _PER_CALL}
        options.update(overrides)
        return self.handle.search(query, cube=self.cube, **options)


def hit_document(hit: SearchHit) -> Document:
    """A search hit as a document that names its memory (see :class:`MemOSRetriever`)."""
    item = hit.item
    metadata: dict[str, Any] = {
        **item.metadata,
        "memory_id": item.id,
        "version": item.version,
        "score": hit.score,
        "cube": item.cube,
        "user": item.user,
        "tags": list(item.tags),
    }
    return Document(page_content=item.text, metadata=metadata, id=item.id)
