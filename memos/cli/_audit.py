"""Commands over whole cubes: the event log, verification, export and import."""

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from memos.cli import _anchors, _render
from memos.cli._anchors import AnchorKeyOption, AnchorOption
from memos.cli._options import CubeOption, JsonFlag
from memos.cli._session import fail, open_local, open_memos, settings
from memos.errors import IntegrityError, InvalidInput

if TYPE_CHECKING:
    from memos import Event, Handle, VerifyReport

audit_app = typer.Typer(
    help="Reports over a cube's log: who changed what, and why memories moved between tiers.",
    no_args_is_help=True,
)


@audit_app.command("migrations")
def migrations(
    ctx: typer.Context,
    cube: CubeOption,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Only the newest N migrations.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Show the scheduler's migrations on a cube, oldest first: what moved between tiers, by
    which policy, with what score, why, and whether it was reverted."""
    with open_memos(ctx, json_errors=json_out) as mos:
        found = mos.scheduler.history(cube, limit=limit)
    if json_out:
        _render.print_json(_render.dumps(found))
    else:
        _render.migrations(found)


@audit_app.command("report")
def report(
    ctx: typer.Context,
    cube: CubeOption,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", metavar="TIME", help="Only from this time on (ISO 8601, e.g. 2026-01-31)."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Report who changed what on a cube: events by actor and kind, migrations, erasures,
    redactions, expiries, policy changes and the changes policies refused."""
    with open_memos(ctx, json_errors=json_out) as mos:
        found = mos.governance.report(cube, since=since)
    if json_out:
        _render.print_json(found.model_dump(mode="json"))
    else:
        _render.audit_report(found)


def log(
    ctx: typer.Context,
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="Only this cube's events (default: all).")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Only the newest N events.")
    ] = None,
    anchor: AnchorOption = None,
    anchor_key: AnchorKeyOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Show the event log, oldest first: every change ever made, with its hash."""
    if anchor is None:
        with open_memos(ctx, json_errors=json_out) as mos:
            events = _events(mos, cube, limit)
    else:
        # checking the heads a file already holds reads the stored log, which no route offers
        with open_local(ctx, "`memos log --anchor`", json_errors=json_out) as local:
            events = _events(local, cube, limit)
            names = [cube] if cube is not None else [info.name for info in local.list_cubes()]
            key = _anchors.read_key(ctx, anchor_key)
            _anchors.write_anchors(ctx, local, anchor, names, key)
            typer.echo(f"anchored {len(names)} cube(s) in {anchor}", err=True)
    if json_out:
        _render.print_json(_render.dumps(events))
    else:
        _render.events(events, with_cube=cube is None)


def _events(mos: "Handle", cube: str | None, limit: int | None) -> list["Event"]:
    return mos.log(cube, limit=limit) if cube is not None else _all_events(mos, limit)


def _all_events(mos: "Handle", limit: int | None) -> list["Event"]:
    events = [event for info in mos.list_cubes() for event in mos.log(info.name)]
    events.sort(key=lambda event: (event.ts, event.cube, event.seq))
    return events if limit is None else events[-limit:]


def verify(
    ctx: typer.Context,
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="Only this cube (default: all).")
    ] = None,
    anchor: AnchorOption = None,
    anchor_key: AnchorKeyOption = None,
    receipt: Annotated[
        Path | None,
        typer.Option(
            "--receipt",
            help="An erasure receipt (`memos forget --receipt`): check its cubes' logs hold "
            "the erasure and nothing it erased is stored.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Recompute every hash chain; exit non-zero naming the first bad event if one fails."""
    parts = None if receipt is None else _receipt_parts(receipt, json_out)
    with open_memos(ctx, json_errors=json_out) as mos:
        if parts is not None:
            results = [mos.verify(name, receipt=digest) for name, digest in parts]
        elif anchor is not None:
            anchors = _anchors.read_anchors(ctx, anchor, _anchors.read_key(ctx, anchor_key))
            results = _anchors.verify_anchored(mos, anchors, cube)
        else:
            results = [mos.verify(cube)] if cube is not None else mos.verify_all()
    if json_out:
        ok = all(report.ok for report in results)
        _render.print_json({"ok": ok, "cubes": _render.dumps(results)})
    else:
        _render.reports(results)
    failed = [report for report in results if not report.ok]
    if failed:
        fail(_verify_error(failed), json_errors=json_out)


def _receipt_parts(path: Path, json_out: bool) -> list[tuple[str, str]]:
    """The (cube, digest) of each part of the receipt in ``path``, each digest recomputed
    from the part's record (a receipt edited since it was written is refused)."""
    from memos.core._erasure import ErasureReceipt

    try:
        receipt = ErasureReceipt.model_validate_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        fail(InvalidInput(f"cannot read the receipt {path}: {exc}"), json_errors=json_out)
    for part in receipt.cubes:
        if part.record.digest != part.digest:
            problem = f"the receipt's record of cube {part.cube!r} does not match its digest"
            fail(IntegrityError(problem, cube=part.cube), json_errors=json_out)
    return [(part.cube, part.digest) for part in receipt.cubes]


def _verify_error(failed: list["VerifyReport"]) -> IntegrityError:
    message = "; ".join(
        f"cube {report.cube!r} does not verify: first bad seq {report.first_bad_seq} "
        f"({report.problem})"
        for report in failed
    )
    return IntegrityError(
        message,
        cubes=[
            {"cube": r.cube, "first_bad_seq": r.first_bad_seq, "problem": r.problem} for r in failed
        ],
    )


def export(
    ctx: typer.Context,
    cube: CubeOption,
    directory: Annotated[Path, typer.Argument(help="A new or empty directory to write.")],
) -> None:
    """Write a cube to a portable, checksummed directory (items, events, vectors)."""
    with open_memos(ctx) as mos:
        written = mos.export_cube(cube, directory)
    typer.echo(f"exported cube {cube!r} to {written}")


def import_(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A directory made by `memos export`.")],
) -> None:
    """Import an exported cube after checking its checksums and hash chain."""
    edge = settings(ctx)
    # opening makes the data dir: a failed import into one that did not exist leaves none
    local = edge.store is None and edge.url is None
    made = _first_missing(edge.data_dir) if local else None
    try:
        with open_memos(ctx, create=True) as mos:
            info = mos.import_cube(directory)
            head_seq = mos.anchor(info.name).seq
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    typer.echo(f"imported cube {info.name!r} ({head_seq} events)")


def _first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet, if any."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing
