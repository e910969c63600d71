"""The main job on the embedded default: remember, search, chat, revise, audit and undo.

Run with ``make demo``. Uses the bundled all-MiniLM-L6-v2 embedder and SmolLM2-135M-Instruct
(converted once into ~/.cache/memos/models), fully offline, and a throwaway data directory
(pass a path to keep it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from memos import MemOS

console = Console()


def show_hits(mos: MemOS, query: str, cube: str, **filters: object) -> None:
    table = Table(title=f"hybrid search: {query!r} {filters or ''}")
    table.add_column("fused score", justify="right")
    table.add_column("memory")
    table.add_column("session")
    for hit in mos.search(query, cube=cube, k=3, **filters):  # type: ignore[arg-type]
        table.add_row(f"{hit.score:.3f}", hit.item.text, hit.item.session or "")
    console.print(table)


def chat_with_kv(mos: MemOS, cube: str) -> None:
    console.print("\n[bold]Chat, with the memories' KV cache as the prompt prefix[/bold]")
    entry = mos.kv.build(cube, query="Alice: home, pets and family", k=4)
    console.print(
        f"KV block {entry.id}: {entry.tokens} tokens of {len(entry.sources)} memories, "
        f"{entry.size / 2**20:.1f} MiB ({entry.manifest.dtype})"
    )
    question = "Where does Alice live?"
    replies = []
    for use_kv in (True, False):
        start = time.perf_counter()
        reply = mos.chat(question, cube=cube, max_new_tokens=24, use_kv=use_kv)
        seconds = time.perf_counter() - start
        replies.append(reply)
        label = "cached prefix" if use_kv else "recomputed   "
        console.print(
            f"  {label} {seconds:5.2f} s, {reply.cached_tokens:>3} of "
            f"{reply.prompt_tokens} prompt tokens cached: {reply.answer.strip()!r}"
        )
    console.print(f"  same greedy tokens: {replies[0].tokens == replies[1].tokens}")


def main(data_dir: Path) -> None:
    console.rule(f"MemOS demo — data dir {data_dir}")
    with MemOS.open(data_dir) as mos:
        mos.create_cube("alice-notes", owner="alice")
        item = mos.add(
            "Alice moved to Lisbon in May 2023",
            cube="alice-notes",
            user="alice",
            tags=["travel"],
            metadata={"source": "chat", "session": "s1"},
        )
        mos.add(
            [
                {"role": "user", "content": "I adopted a border collie called Pixel."},
                {"role": "assistant", "content": "Pixel is a great name for a collie!"},
                {"role": "user", "content": "My sister Maria is a pediatric nurse in Boston."},
            ],
            cube="alice-notes",
            user="alice",
            session="s2",
        )
        show_hits(mos, "where does Alice live?", "alice-notes")
        show_hits(mos, "what pet does she have?", "alice-notes", session="s2")
        chat_with_kv(mos, "alice-notes")

        console.print(
            "\n[bold]Revise (which drops the KV block built on it), delete, roll back[/bold]"
        )
        mos.update(item.id, "Alice moved to Porto in June 2023", user="alice", expected_version=1)
        mos.delete(item.id, user="alice", reason="user asked")
        restored = mos.rollback(item.id, to_version=1, user="alice", reason="bad edit")
        console.print(f"restored as version {restored.version}: {restored.text!r}")
        for entry in mos.history(item.id):
            console.print(f"  v{entry.version} {entry.event.op.value:<8} {entry.item.text!r}")
        console.print(mos.diff(item.id, 1, 2).text_diff)

        console.print("[bold]The audit log[/bold]")
        for event in mos.log("alice-notes"):
            console.print(
                f"  #{event.seq:<2} {event.op.value:<11} by {event.actor:<6} {event.hash[:12]}"
                + (f"  ({event.reason})" if event.reason else "")
            )
        report = mos.verify("alice-notes")
        console.print(f"verify: ok={report.ok} events={report.events}")

        export_dir = data_dir / "export"
        mos.export_cube("alice-notes", export_dir)
    with MemOS.open(data_dir / "imported") as other:
        other.import_cube(export_dir)
        console.print(f"imported copy verifies: {other.verify('alice-notes').ok}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="memos-demo-") as tmp:
            main(Path(tmp))
