"""Persistence backends behind :class:`memos.Store`, opened by URL with :func:`memos.open_store`."""
