"""How results look: rich tables for people, JSON (pydantic's JSON mode) for scripts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from memos import (
        AuditReport,
        ChatReply,
        CubeInfo,
        CubeStats,
        ErasureReceipt,
        Event,
        HistoryEntry,
        ItemDiff,
        Job,
        MemoryItem,
        SearchHit,
        VerifyReport,
    )
    from memos.activation import KVEntry
    from memos.core._scheduling import Migration, SchedulePlan

_HASH_PREFIX = 8
_PIPE_WIDTH = 200


def console() -> Console:
    """A stdout console that never reads memory texts (user data) as rich markup.

    Piped output gets wide rows instead of rich's 80 columns, so ids stay whole for grep and
    awk; a terminal (or ``COLUMNS``) sets the width as usual.
    """
    from rich.console import Console

    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(markup=False, highlight=False, emoji=False, width=_PIPE_WIDTH if piped else None)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def dumps(models: Iterable[BaseModel]) -> list[dict[str, Any]]:
    return [model.model_dump(mode="json") for model in models]


def when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _grid() -> Table:
    from rich.table import Table

    return Table.grid(padding=(0, 2))


def _styled(line: str, style: str) -> Text:
    from rich.text import Text

    return Text(line, style=style)


# Ids and short fixed-width values never wrap; free text (memory texts, reasons) does.
_NO_WRAP = frozenset(
    {"id", "item", "seq", "op", "hash", "score", "version", "status", "dtype", "model"}
)


def _table(*columns: str) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name in columns:
        table.add_column(name, no_wrap=name in _NO_WRAP)
    return table


def cubes(infos: Sequence[CubeInfo]) -> None:
    table = _table("name", "owner", "embedder", "dim", "codec", "created")
    for info in infos:
        table.add_row(
            info.name, info.owner, info.embedder, str(info.dim), info.codec, when(info.created_at)
        )
    _print_or_none(table, infos, "no cubes")


def hits(found: Sequence[SearchHit]) -> None:
    table = _table("score", "id", "text")
    for hit in found:
        table.add_row(f"{hit.score:.3f}", hit.item.id, hit.item.text)
    _print_or_none(table, found, "no matches")


def items(found: Sequence[MemoryItem]) -> None:
    table = _table("id", "created", "user", "tags", "text")
    for memory in found:
        tags = ", ".join(memory.tags) or "-"
        table.add_row(memory.id, when(memory.created_at), memory.user or "-", tags, memory.text)
    _print_or_none(table, found, "no memories")


def item(memory: MemoryItem) -> None:
    table = _grid()
    table.add_column(style="bold")
    table.add_column()
    rows = {
        "id": memory.id,
        "cube": memory.cube,
        "version": str(memory.version),
        "status": memory.status.value,
        "user": memory.user or "-",
        "tags": ", ".join(memory.tags) or "-",
        "metadata": json.dumps(memory.metadata, ensure_ascii=False) if memory.metadata else "-",
        "occurred": when(memory.occurred_at),
        "created": when(memory.created_at),
        "updated": when(memory.updated_at),
        "text": memory.text,
    }
    for name, value in rows.items():
        table.add_row(name, value)
    console().print(table)


def history(entries: Sequence[HistoryEntry]) -> None:
    table = _table("version", "seq", "time", "actor", "op", "status", "text", "reason")
    for entry in entries:
        table.add_row(
            str(entry.version),
            str(entry.event.seq),
            when(entry.event.ts),
            entry.event.actor,
            entry.event.op.value,
            entry.item.status.value,
            entry.item.text,
            entry.event.reason or "",
        )
    console().print(table)


def events(log: Sequence[Event], *, with_cube: bool) -> None:
    columns = ("seq", "time", "actor", "op", "item", "reason", "hash")
    table = _table(*(("cube", *columns) if with_cube else columns))
    for event in log:
        row = [
            str(event.seq),
            when(event.ts),
            event.actor,
            event.op.value,
            event.item_id or "",
            event.reason or "",
            event.hash[:_HASH_PREFIX],
        ]
        table.add_row(*([event.cube, *row] if with_cube else row))
    _print_or_none(table, log, "no events")


def diff(changes: ItemDiff) -> None:
    out = console()
    out.print(f"memory {changes.item_id}: version {changes.from_version} -> {changes.to_version}")
    if changes.unchanged:
        out.print("no differences")
        return
    fields = [c for c in changes.changes if c.field != "text"]
    if fields:
        table = _table("field", "old", "new")
        for change in fields:
            table.add_row(change.field, _plain(change.old), _plain(change.new))
        out.print(table)
    for line in changes.text_diff.splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
        out.print(_styled(line, style))


def reports(results: Sequence[VerifyReport]) -> None:
    table = _table("cube", "status", "events", "head seq", "first bad seq", "problem")
    for report in results:
        status = _styled("ok", "green") if report.ok else _styled("FAILED", "bold red")
        bad = "" if report.first_bad_seq is None else str(report.first_bad_seq)
        table.add_row(
            report.cube, status, str(report.events), str(report.head_seq), bad, report.problem or ""
        )
    _print_or_none(table, results, "no cubes to verify")


def cube_stats(stats: CubeStats) -> None:
    table = _grid()
    table.add_column(style="bold")
    table.add_column()
    fit = "not fitted" if stats.needs_fit and not stats.fitted else "fitted"
    encoding = stats.codec if not stats.needs_fit else f"{stats.codec} ({fit})"
    if stats.needs_fit and not stats.fitted:
        encoding += f", exact fp32 until {stats.fit_min} memories"
    per_vector = "-" if stats.ram_bytes_per_vector is None else f"{stats.ram_bytes_per_vector:.1f}"
    rows = {
        "cube": stats.cube,
        "items": f"{stats.items_active} active, {stats.items_total} total",
        "codec": encoding,
        "codec version": str(stats.codec_version),
        "codec state": stats.codec_state or "-",
        "dimensions": f"{stats.dim} (codes hold {stats.projected_dim})",
        "bytes/vector in RAM": per_vector,
        "bytes/vector on disk": f"{stats.disk_bytes_per_vector} (fp32)",
        "index in RAM": f"{stats.index_ram_bytes} bytes for {stats.index_vectors} vectors",
        "codec state in RAM": f"{stats.codec_state_bytes} bytes",
        "index seq": str(stats.index_seq),
        "snapshot seq": "-" if stats.snapshot_seq is None else str(stats.snapshot_seq),
    }
    for name, value in rows.items():
        table.add_row(name, value)
    console().print(table)


def schedule(plan: SchedulePlan) -> None:
    """A plan's decisions, then each tier against its budgets now and after them."""
    table = _table("action", "score", "bytes", "target", "memories", "reason")
    for d in plan.decisions:
        target = d.entry or d.extends or d.adapter or d.codec or ""
        table.add_row(
            d.action, f"{d.score:g}", str(d.bytes), target,
            ", ".join(i[:_HASH_PREFIX] for i in d.items), d.reason,
        )  # fmt: skip
    _print_or_none(table, plan.decisions, f"nothing to do on {plan.cube} ({plan.policy})")
    now, after, budget = plan.usage, plan.after, plan.budgets
    lines = (
        f"KV: {now.kv_blocks} blocks, {now.kv_bytes} bytes now; {after.kv_blocks} blocks, "
        f"{after.kv_bytes} bytes after (budget {_limit(budget.kv_blocks, 'blocks')}, "
        f"{_limit(budget.kv_bytes, 'bytes')})",
        f"adapters: {now.adapters} versions, {now.adapter_bytes} bytes now; {after.adapters} "
        f"versions, {after.adapter_bytes} bytes after (budget "
        f"{_limit(budget.adapters, 'versions')}, {_limit(budget.adapter_bytes, 'bytes')})",
        f"vectors: {now.vector_bytes} bytes now; {after.vector_bytes} bytes after (budget "
        f"{_limit(budget.vector_bytes, 'bytes')})",
    )
    for line in lines:
        console().print(line, highlight=False)


def erasure(receipt: ErasureReceipt) -> None:
    table = _table("cube", "erase seq", "items", "events", "blocks", "adapters", "blobs",
                   "retrained", "dampened", "digest")  # fmt: skip
    for part in receipt.cubes:
        record = part.record
        table.add_row(
            part.cube, str(part.seq), str(len(record.items)), str(len(part.events)),
            str(len(record.blocks)), str(len(record.adapters)), str(len(record.blobs)),
            str(len(part.retrained)), str(len(part.dampened)), part.digest,
        )  # fmt: skip
    _print_or_none(table, receipt.cubes, "no memory matched: nothing was erased")


def audit_report(report: AuditReport) -> None:
    out = console()
    since = "the start" if report.since is None else when(report.since)
    out.print(
        f"{report.cube}: {report.events} events from {since} to "
        f"{when(report.until)}; {len(report.migrations)} migrations, {report.expired} "
        f"expired, {len(report.policy_changes)} policy changes"
    )
    actors = _table("actor", "events", "by kind")
    for a in report.actors:
        kinds = ", ".join(f"{op} {n}" for op, n in a.ops.items())
        actors.add_row(a.actor, str(a.events), kinds)
    _print_or_none(actors, report.actors, "no events")
    if report.erasures:
        erased = _table("seq", "time", "actor", "items", "blocks", "adapters", "blobs", "reason")
        for e in report.erasures:
            erased.add_row(
                str(e.seq), when(e.ts), e.actor, str(e.items), str(e.blocks),
                str(e.adapters), str(e.blobs), e.reason or "",
            )  # fmt: skip
        out.print(erased)
    if report.redacted:
        counts = ", ".join(f"{kind} {n}" for kind, n in report.redacted.items())
        out.print(f"redacted on write ({len(report.redactions)} writes): {counts}")
    if report.refusals:
        refused = _table("time", "actor", "code", "message")
        for r in report.refusals:
            refused.add_row(when(r.ts), r.actor, r.code, r.message)
        out.print(refused)


def migrations(found: Sequence[Migration]) -> None:
    table = _table("seq", "time", "action", "target", "memories", "score", "reason", "reverted")
    for m in found:
        table.add_row(
            str(m.seq), when(m.ts), m.action, m.target or "",
            ", ".join(i[:_HASH_PREFIX] for i in m.items), f"{m.score:g}",
            f"{m.policy}: {m.reason}", "" if m.reverted_by is None else f"by {m.reverted_by}",
        )  # fmt: skip
    _print_or_none(table, found, "no migrations")


def scheduler_status(info: CubeInfo, plan: SchedulePlan | None) -> None:
    from memos.core._types import SchedulerConfig

    config = info.scheduler or SchedulerConfig()
    table = _table("setting", "value")
    table.add_row("policy", config.policy)
    table.add_row("enabled", "yes" if config.enabled else "no")
    for name, value in sorted(config.parameters.items()):
        table.add_row(f"parameter {name}", str(value))
    for name, value in config.budgets.model_dump().items():
        table.add_row(f"budget {name}", _limit(value))
    if plan is not None:
        for name, value in plan.usage.model_dump().items():
            table.add_row(f"{name.replace('_', ' ')} now", str(value))
        table.add_row("next tick", f"{len(plan.decisions)} migrations")
    console().print(table)


def _limit(value: int | None, unit: str = "") -> str:
    return "no limit" if value is None else f"{value} {unit}".rstrip()


def kv_entries(entries: Sequence[KVEntry]) -> None:
    table = _table("id", "tokens", "dtype", "size", "sources", "model", "created")
    for entry in entries:
        table.add_row(
            entry.id,
            str(entry.tokens),
            entry.manifest.dtype,
            str(entry.size),
            str(len(entry.sources)),
            entry.manifest.model.short,
            when(entry.created_at),
        )
    _print_or_none(table, entries, "no KV entries")


def jobs(listed: Sequence[Job]) -> None:
    table = _table("id", "kind", "state", "attempts", "actor", "submitted", "finished")
    for job in listed:
        finished = "" if job.finished_at is None else when(job.finished_at)
        table.add_row(job.id, job.kind.value, job.state.value, str(job.attempts), job.actor,
                      when(job.submitted_at), finished)  # fmt: skip
    _print_or_none(table, listed, "no jobs")


def job(shown: Job) -> None:
    """A job's fields, one per line; its result or failure last."""
    lines = {
        "id": shown.id, "cube": shown.cube, "kind": shown.kind.value,
        "params": json.dumps(shown.params, ensure_ascii=False), "state": shown.state.value,
        "attempts": str(shown.attempts), "actor": shown.actor, "reason": shown.reason or "",
        "worker": shown.worker or "", "submitted": when(shown.submitted_at),
        "finished": "" if shown.finished_at is None else when(shown.finished_at),
    }  # fmt: skip
    if shown.result is not None:
        lines["result"] = json.dumps(shown.result, ensure_ascii=False)
    if shown.failure is not None:
        lines["failure"] = f"{shown.failure.code}: {shown.failure.message}"
    for name, value in lines.items():
        typer.echo(f"{name + ':':<10} {value}")


def chat_summary(reply: ChatReply) -> str:
    """One line: the memories in the prompt, and how much of it a stored KV cache served."""
    used = ", ".join(memory.id for memory in reply.memories) or "none"
    if reply.kv_entry is None:
        kv = f"none ({reply.prompt_tokens} prompt tokens computed)"
    else:
        kv = (
            f"{reply.kv_entry} ({reply.cached_tokens} of {reply.prompt_tokens} "
            "prompt tokens cached)"
        )
    return f"memories: {used}; kv: {kv}"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _print_or_none(table: Table, rows: Sequence[Any], empty: str) -> None:
    console().print(table if rows else empty)
