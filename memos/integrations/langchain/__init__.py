"""MemOS as LangChain components (``langchain-core`` only), each over an embedded
``MemOS.open(...)`` and a ``MemOS.connect(...)`` client alike:

- :class:`MemOSVectorStore`: a cube as a vector store (ids, metadata, filters, scores);
- :class:`MemOSRetriever`: searching a cube, each document naming its memory and version;
- :class:`MemOSChatMessageHistory`: a chat session's messages as searchable, audited memories;
- :class:`MemOSEmbeddings`: a MemOS embedder as LangChain embeddings, and
  :class:`LangChainEmbedder`: LangChain embeddings as a cube's embedder;
- :class:`ChatMemOS`: the local model answering with a cube's memories, streamed.

Importing this module imports ``langchain_core``; ``import memos`` does not.
"""

from memos.integrations.langchain._chat_model import ChatMemOS
from memos.integrations.langchain._embeddings import LangChainEmbedder, MemOSEmbeddings
from memos.integrations.langchain._history import MemOSChatMessageHistory
from memos.integrations.langchain._retriever import MemOSRetriever
from memos.integrations.langchain._vectorstore import ID_KEY, MemOSVectorStore

__all__ = [
    "ID_KEY",
    "ChatMemOS",
    "LangChainEmbedder",
    "MemOSChatMessageHistory",
    "MemOSEmbeddings",
    "MemOSRetriever",
    "MemOSVectorStore",
]
