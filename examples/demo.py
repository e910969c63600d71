"""The main job on the embedded default: remember, search, chat, revise, audit and undo.

Run with ``make demo``. Uses the bundled all-MiniLM-L6-v2 embedder and SmolLM2-135M-Instruct
(converted once into ``$MEMOS_MODEL_CACHE``, default ~/.cache/memos/models), fully offline, and
a throwaway data directory (pass a path to keep it).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from memos import MemOS

CUBE = "alice-notes"
ANSWER_TOKENS = 24
console = Console()


def step(number: int, title: str, explanation: str) -> None:
    console.print(f"\n[bold]{number}. {title}[/bold]")
    console.print(f"[dim]{explanation}[/dim]")


def show_hits(mos: MemOS, query: str, **filters: str) -> None:
    where = ", ".join(f"{key}={value}" for key, value in filters.items())
    table = Table(title=f"search {query!r}" + (f" where {where}" if where else ""))
    table.add_column("score", justify="right")
    table.add_column("memory")
    table.add_column("session")
    for hit in mos.search(query, cube=CUBE, k=3, **filters):  # type: ignore[arg-type]
        table.add_row(f"{hit.score:.3f}", hit.item.text, hit.item.session or "")
    console.print(table)


def remember(mos: MemOS) -> str:
    step(1, "Remember", "A cube holds Alice's memories: one note, then a chat (one memory each).")
    mos.create_cube(CUBE, owner="alice")
    note = mos.add(
        "Alice moved to Lisbon in May 2023",
        cube=CUBE,
        user="alice",
        tags=["travel"],
        metadata={"source": "chat", "session": "s1"},
    )
    chat = mos.add(
        [
            {"role": "user", "content": "I adopted a border collie called Pixel."},
            {"role": "assistant", "content": "Pixel is a great name for a collie!"},
            {"role": "user", "content": "My sister Maria is a pediatric nurse in Boston."},
        ],
        cube=CUBE,
        user="alice",
        session="s2",
    )
    console.print(f"cube {CUBE!r} now holds {1 + len(chat)} memories")
    return note.id


def search(mos: MemOS) -> None:
    step(
        2,
        "Search",
        "Hybrid search ranks by meaning (embeddings) and by shared words (bm25) and fuses the "
        "two rankings; filters such as the session apply inside the search.",
    )
    show_hits(mos, "where does Alice live?")
    show_hits(mos, "what pet does she have?", session="s2")


def chat_with_kv(mos: MemOS) -> None:
    step(
        3,
        "Chat from activation memory",
        "The memories' KV cache is computed once and stored; a chat starts from it and reads "
        "only the question, instead of recomputing the memories in the prompt.",
    )
    entry = mos.kv.build(CUBE, query="Alice: home, pets and family", k=4)
    console.print(
        f"KV block {entry.id}: {entry.tokens} tokens of {len(entry.sources)} memories, "
        f"{entry.size / 2**20:.1f} MiB ({entry.manifest.dtype})"
    )
    question = "Where does Alice live?"
    table = Table(title=f"chat {question!r}")
    table.add_column("prompt")
    table.add_column("tokens from the block", justify="right")
    table.add_column(f"seconds, {ANSWER_TOKENS} tokens", justify="right")
    table.add_column("answer")
    replies = []
    for use_kv in (True, False):
        start = time.perf_counter()
        reply = mos.chat(question, cube=CUBE, max_new_tokens=ANSWER_TOKENS, use_kv=use_kv)
        seconds = time.perf_counter() - start
        replies.append(reply)
        table.add_row(
            "from the KV block" if use_kv else "recomputed",
            f"{reply.cached_tokens} of {reply.prompt_tokens}",
            f"{seconds:.2f}",
            reply.answer.strip(),
        )
    console.print(table)
    console.print(f"same answer, token for token: {replies[0].tokens == replies[1].tokens}")


def revise_and_undo(mos: MemOS, item_id: str) -> None:
    step(
        4,
        "Revise, delete, roll back",
        "Each change makes a new version; the KV block built on the old text is dropped. A "
        "rollback brings old content back as a new version: history is never rewritten.",
    )
    mos.update(item_id, "Alice moved to Porto in June 2023", user="alice", expected_version=1)
    mos.delete(item_id, user="alice", reason="user asked")
    restored = mos.rollback(item_id, to_version=1, user="alice", reason="bad edit")
    console.print(f"restored as version {restored.version}: {restored.text!r}")
    table = Table(title=f"history of {item_id}")
    table.add_column("version", justify="right")
    table.add_column("op")
    table.add_column("text")
    for entry in mos.history(item_id):
        table.add_row(str(entry.version), entry.event.op.value, entry.item.text)
    console.print(table)
    console.print("diff of versions 1 and 2:")
    console.print(mos.diff(item_id, 1, 2).text_diff, highlight=False)


def audit(mos: MemOS) -> None:
    step(
        5,
        "Audit",
        "Every change above is an event in the cube's log; each event's hash covers the one "
        "before it, so verify finds any event edited, dropped or reordered.",
    )
    table = Table(title=f"the log of {CUBE!r}")
    table.add_column("seq", justify="right")
    table.add_column("op")
    table.add_column("by")
    table.add_column("hash")
    table.add_column("reason")
    for event in mos.log(CUBE):
        table.add_row(
            str(event.seq), event.op.value, event.actor, event.hash[:12], event.reason or ""
        )
    console.print(table)
    report = mos.verify(CUBE)
    console.print(f"verify: ok={report.ok} events={report.events}")


def export_and_import(mos: MemOS, data_dir: Path) -> None:
    step(6, "Export and import", "A cube moves as files; the import checks its whole chain.")
    export_dir = data_dir / "export"
    mos.export_cube(CUBE, export_dir)
    with MemOS.open(data_dir / "imported") as other:
        other.import_cube(export_dir)
        console.print(f"imported copy verifies: {other.verify(CUBE).ok}")


def main(data_dir: Path) -> None:
    console.rule(f"MemOS demo — data dir {data_dir}")
    model_cache = Path(os.environ.get("MEMOS_MODEL_CACHE", "~/.cache/memos/models"))
    with MemOS.open(data_dir, model_cache=model_cache.expanduser()) as mos:
        item_id = remember(mos)
        search(mos)
        chat_with_kv(mos)
        revise_and_undo(mos, item_id)
        audit(mos)
        export_and_import(mos, data_dir)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="memos-demo-") as tmp:
            main(Path(tmp))
