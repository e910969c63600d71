"""Stop sequences: a chat's answer ends before the first of them, generation stops there, and
what streams is the answer, never a piece of a stop sequence; checked on the cutting alone
(any text, any pieces, any sequences) and on chats embedded and over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _backends import clients
from hypothesis import given
from hypothesis import strategies as st

from memos import HashEmbedder
from memos.engine._chat import StopCut
from memos.errors import InvalidInput
from memos.llm import LocalModel

FACTS = ["alice moved to lisbon in may", "bob plays the drums on fridays"]
QUESTION = "where did alice move"

# a small alphabet makes stop sequences that occur, start to occur, and overlap
texts = st.text(alphabet="abc ", max_size=30)


@given(
    pieces=st.lists(texts, max_size=8),
    stop=st.lists(st.text(alphabet="abc ", min_size=1, max_size=4), max_size=4),
)
def test_the_pieces_shown_are_the_answer_cut_before_its_first_stop_sequence(
    pieces: list[str], stop: list[str]
) -> None:
    cut, text, shown = StopCut(stop), "", ""
    for piece in pieces:
        text += piece
        ready = cut.ready(text)
        assert ready.startswith(shown)  # what was shown is never taken back
        assert not any(s in ready for s in stop)
        shown = ready
        if cut.hit is not None:
            break
    answer = StopCut(stop).final(text)
    assert answer == min((text[: text.index(s)] for s in stop if s in text), key=len, default=text)
    assert answer.startswith(shown)
    if cut.hit is not None:
        assert shown == answer


@pytest.fixture(params=["sqlite", "sqlite-http"])
def alice(request: pytest.FixtureRequest, tmp_path: Path, tiny_model: LocalModel) -> Iterator[Any]:
    with clients(request.param, tmp_path / "data", embedder=HashEmbedder(64), model=tiny_model) as (
        _,
        connect,
    ):
        client = connect("alice")
        client.create_cube("notes")
        client.add_many(FACTS, cube="notes")
        yield client


def test_a_chat_ends_before_its_first_stop_sequence(alice: Any) -> None:
    full = alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=24)
    assert full.stop is None
    word = full.answer.split()[2]
    cut = alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=24, stop=["zzz", word])
    assert cut.answer == full.answer[: full.answer.index(word)]
    assert cut.stop == word
    assert 0 < len(cut.tokens) < len(full.tokens)  # generation stopped there
    assert cut.tokens == full.tokens[: len(cut.tokens)]
    stream = alice.chat_stream(QUESTION, cube="notes", k=2, max_new_tokens=24, stop=word)
    pieces = list(stream)
    assert "".join(pieces) == cut.answer
    assert stream.reply.stop == word
    unseen = alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=24, stop=["never said"])
    assert (unseen.answer, unseen.tokens, unseen.stop) == (full.answer, full.tokens, None)


def test_a_stopped_chat_lets_go_of_its_kv_block(alice: Any) -> None:
    """A generation ended by a stop sequence releases the stored block's cache, so the next
    chat over the block reads it too (and answers as a recomputed one)."""
    entry = alice.kv.build("notes", [h.item.id for h in alice.search(QUESTION, cube="notes", k=2)])
    full = alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=24)
    word = full.answer.split()[1]
    for _ in range(3):
        cut = alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=24, stop=word)
        assert (cut.kv_entry, cut.cached_tokens) == (entry.id, entry.tokens)
    again = alice.chat(QUESTION, cube="notes", k=2, max_new_tokens=24, use_kv=False)
    assert again.tokens == full.tokens


@pytest.mark.parametrize(
    ("stop", "says"),
    [
        (["a", "b", "c", "d", "e"], "stop holds 5 sequences"),
        ([""], "stop[0] must be a string of 1 to 256"),
        ("x" * 257, "stop[0] must be a string of 1 to 256"),
        (["ok", 3], "stop|schema"),  # over HTTP the request's schema refuses it first
        (["\ud800"], "not valid Unicode"),
    ],
)
def test_bad_stop_sequences_are_refused(alice: Any, stop: Any, says: str) -> None:
    with pytest.raises(InvalidInput, match=says.replace("[", r"\[").replace("]", r"\]")):
        alice.chat(QUESTION, cube="notes", stop=stop)
