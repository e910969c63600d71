"""Faces of MemOS inside other frameworks: :mod:`memos.integrations.langchain` (LangChain's
vector store, retriever, chat history, embeddings and chat model over a cube). Each imports
its framework when it is imported itself; ``import memos`` imports none of them."""
