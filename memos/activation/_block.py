"""A memory block: an ordered set of items rendered by one template into the system message.

The block opens the system message of the chat prompt and its cache stops where the block's
text ends (before the message's end-of-turn), so (with the model's template) it is an exact token
prefix of every prompt whose memories start with the block's, in its order: retrieved memories
the block lacks follow it in the same list, and only they and the question are computed.
Changing this template changes ``BLOCK_TEMPLATE``, and caches rendered with an older one are no
longer matched.
"""

from __future__ import annotations

from collections.abc import Sequence

from memos.core._types import MemoryItem

BLOCK_TEMPLATE = "memos-block-2"
_HEADER = (
    "You are a helpful assistant with a long-term memory. Answer the user's question; "
    "use the memories below when they are relevant."
)


def render_block(items: Sequence[MemoryItem]) -> str:
    """The system message holding ``items`` in order (no memories: the header alone). The
    rendering of a list starts with the rendering of any non-empty list it starts with."""
    if not items:
        return _HEADER
    lines = [
        f"{n}. ({item.occurred_at.date().isoformat()}) {item.text}"
        for n, item in enumerate(items, 1)
    ]
    return _HEADER + "\n\nMemories:\n" + "\n".join(lines)


def template_version(chat_template_sha256: str) -> str:
    """The name a cache records for the templates it was rendered with."""
    return f"{BLOCK_TEMPLATE}/{chat_template_sha256[:16]}"
