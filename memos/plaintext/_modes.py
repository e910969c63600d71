"""The search modes, apart from the search itself: the ``memos search --mode`` option names
them without importing the retrievers (numpy, the store protocols)."""

from enum import StrEnum


class SearchMode(StrEnum):
    DENSE = "dense"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


DEFAULT_MODE = SearchMode.HYBRID
