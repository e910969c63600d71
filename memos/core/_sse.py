"""Reading server-sent events: the one parser of the HTTP client's streamed chat and of an
upstream model's stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def event_data(lines: Iterable[str], *, last_unterminated: bool = False) -> Iterator[str]:
    """The ``data`` of each server-sent event in ``lines``: its ``data:`` lines joined by
    newlines (comments and other fields skipped). An event the stream ends inside (no blank
    line after it) is skipped, as cut off, unless ``last_unterminated``."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data and last_unterminated:
        yield "\n".join(data)
