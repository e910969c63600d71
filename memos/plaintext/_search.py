"""Searching a cube: by meaning (dense vectors), by words (the store's bm25), or both fused.

Every mode applies the filters inside its retriever, before any top-k is taken, so a filter
never empties a result that had matching memories further down. A hit's score depends on
the mode:

- ``dense``: cosine similarity of the query's and the memory's embeddings (exact even with a
  lossy codec: the candidates are re-scored with full-precision vectors);
- ``keyword``: bm25 over the cube's memories, higher is better (only comparable within one
  search);
- ``hybrid`` (the default): the weighted reciprocal-rank-fusion score of the memory's ranks in
  both lists, ``sum(weight / (RRF_K + rank))`` with ranks from 1.

The fusion settings were chosen on the LoCoMo development conversations (2,760 turns, each a
memory; 997 questions, each a search; a hit when an evidence turn is in the top 10;
all-MiniLM-L6-v2). With each turn's text as the memory, dense search found evidence for 35% of
the questions, keyword search 65%, hybrid 67%; with the speaker's name in front of the text,
52%, 68% and 72%. The textbook ``k = 60`` with equal weights scored 53% and 69%: so flat a
rank curve lets an item ranked 30th in both lists beat one ranked first in one, and here the
dense list is the weaker. Keyword search alone is better at the top 1 (33% against 26%), so
it is the mode to use for exact names and ids; hybrid is the default because it finds the
most in the top 10 (and as many or more in the top 5) and does not need the query to share
words with the memory.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import datetime

from memos.core import _validation as check
from memos.core._store import Store
from memos.core._types import ItemFilter, ItemStatus, MetadataValue, SearchHit
from memos.core._validation import Limits
from memos.errors import InvalidInput
from memos.plaintext._modes import DEFAULT_MODE as DEFAULT_MODE
from memos.plaintext._modes import SearchMode as SearchMode

RRF_K = 10
DENSE_WEIGHT = 0.5
KEYWORD_WEIGHT = 1.0
# each list contributes this many candidates per result asked for, and at least CANDIDATE_MIN
CANDIDATE_FACTOR = 4
CANDIDATE_MIN = 40
# bm25 gives a word in more than half of the cube's memories no weight (FTS5 floors its idf at
# 1e-6), so a keyword hit scoring below this matched only such words: no evidence, and in a
# fusion it would still outrank real matches on position alone ("INV" in every invoice)
MIN_KEYWORD_SCORE = 1e-4

Ranking = list[tuple[str, float]]
# (how many, the ids allowed or None for all) -> (item_id, cosine) best first
DenseSearch = Callable[[int, Collection[str] | None], Ranking]


_MODES = tuple(m.value for m in SearchMode)


def search_mode(value: object) -> SearchMode:
    if isinstance(value, str) and value in _MODES:
        return SearchMode(value)
    modes = ", ".join(_MODES)
    raise InvalidInput(f"unknown search mode {value!r} (use {modes})", field="mode")


def item_filter(
    limits: Limits,
    *,
    user: str | None = None,
    tags: Iterable[str] | None = None,
    session: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    where: Mapping[str, MetadataValue] | None = None,
) -> ItemFilter:
    """The checked filter for a search's keyword arguments."""
    return ItemFilter(
        user=check.optional_principal(user, "user", limits),
        tags=check.tags(tags, limits),
        session=check.optional_principal(session, "session", limits),
        since=None if since is None else check.timestamp(since, "since"),
        until=None if until is None else check.timestamp(until, "until"),
        where=check.metadata(where, limits),
    )


def search(
    store: Store,
    cube: str,
    query: str,
    *,
    k: int,
    flt: ItemFilter,
    mode: SearchMode,
    dense: DenseSearch,
    aside: Executor | None = None,
) -> list[SearchHit]:
    """The ``k`` best active memories of ``cube`` for ``query`` that pass ``flt``; with
    ``aside``, hybrid runs its keyword retrieval there, beside the dense one."""
    allowed = None
    if mode is not SearchMode.KEYWORD and not flt.is_empty:
        allowed = store.filter_item_ids(cube, flt)
    if mode is SearchMode.DENSE:
        ranked = dense(k, allowed)
    elif mode is SearchMode.KEYWORD:
        ranked = store.keyword_search(cube, query, k, flt)
    else:
        depth = max(CANDIDATE_FACTOR * k, CANDIDATE_MIN)
        # The keyword query runs while the query is embedded (both release the GIL), so
        # hybrid costs about what dense does.
        words = (
            None if aside is None else aside.submit(store.keyword_search, cube, query, depth, flt)
        )
        by_meaning = [item_id for item_id, _ in dense(depth, allowed)]
        keyword = store.keyword_search(cube, query, depth, flt) if words is None else words.result()
        by_words = [item_id for item_id, score in keyword if score >= MIN_KEYWORD_SCORE]
        ranked = fuse([by_meaning, by_words], weights=[DENSE_WEIGHT, KEYWORD_WEIGHT], k_rrf=RRF_K)
    return _hits(store, cube, ranked, k)


def fuse(
    rankings: Sequence[Sequence[str]],
    *,
    weights: Sequence[float] | None = None,
    k_rrf: int = RRF_K,
) -> Ranking:
    """Weighted reciprocal rank fusion: each id scores ``sum(weight / (k_rrf + rank))`` over
    the rankings it is in (ranks from 1), best first. Ties go to the id with the better best
    rank, then to the earlier ranking."""
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    scores: dict[str, float] = {}
    for rank in range(max((len(r) for r in rankings), default=0)):
        for ranking, weight in zip(rankings, weights, strict=True):
            if rank < len(ranking):
                item_id = ranking[rank]
                scores[item_id] = scores.get(item_id, 0.0) + weight / (k_rrf + rank + 1)
    # dicts keep first-seen order, which is best rank first; sorted() is stable
    return sorted(scores.items(), key=lambda pair: -pair[1])


def _hits(store: Store, cube: str, ranked: Ranking, k: int) -> list[SearchHit]:
    """The first ``k`` ranked ids that are still active memories of ``cube``, with their
    scores."""
    hits: list[SearchHit] = []
    for start in range(0, len(ranked), k):
        chunk = ranked[start : start + k]
        items = store.get_items([item_id for item_id, _ in chunk], cube=cube)
        hits.extend(
            SearchHit(item=items[item_id], score=score)
            for item_id, score in chunk
            if item_id in items and items[item_id].status == ItemStatus.ACTIVE
        )
        if len(hits) >= k:
            break
    return hits[:k]
