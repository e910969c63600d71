"""Commands that read memories: search, ls, show, history, diff."""

from typing import Annotated

import typer

from memos.cli import _render
from memos.cli._options import (
    CubeOption,
    ItemId,
    JsonFlag,
    OfUser,
    SessionFilter,
    Since,
    TagFilter,
    Until,
)
from memos.cli._session import open_memos
from memos.plaintext._modes import DEFAULT_MODE, SearchMode


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    cube: CubeOption,
    k: Annotated[int, typer.Option("-k", help="How many memories to return.")] = 5,
    user: OfUser = None,
    tag: TagFilter = None,
    session: SessionFilter = None,
    since: Since = None,
    until: Until = None,
    mode: Annotated[
        SearchMode,
        typer.Option(
            "--mode",
            case_sensitive=False,
            help="dense: by meaning; keyword: by shared words; hybrid: both, fused.",
        ),
    ] = DEFAULT_MODE,
    json_out: JsonFlag = False,
) -> None:
    """Find the memories that best match a query, best first."""
    with open_memos(ctx, json_errors=json_out) as mos:
        found = mos.search(
            query,
            cube=cube,
            k=k,
            user=user,
            tags=tag,
            session=session,
            since=since,
            until=until,
            mode=mode,
        )
    if json_out:
        _render.print_json(_render.dumps(found))
    else:
        _render.hits(found)


def ls(
    ctx: typer.Context,
    cube: CubeOption,
    user: OfUser = None,
    tag: TagFilter = None,
    session: SessionFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", help="How many, at most [default: 1000, or the server's]."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option("--after", metavar="ID", help="Start after this memory (the last one shown)."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List a cube's memories, oldest first, with the filters of search (nothing is
    embedded)."""
    with open_memos(ctx, json_errors=json_out) as mos:
        found = mos.list_memories(
            cube=cube, user=user, tags=tag, session=session, since=since, until=until,
            limit=limit, after=after,
        )  # fmt: skip
    if json_out:
        _render.print_json(_render.dumps(found))
    else:
        _render.items(found)


def show(ctx: typer.Context, item_id: ItemId, json_out: JsonFlag = False) -> None:
    """Show a memory as it is now."""
    with open_memos(ctx, json_errors=json_out) as mos:
        item = mos.get(item_id)
    if json_out:
        _render.print_json(item.model_dump(mode="json"))
    else:
        _render.item(item)


def history(ctx: typer.Context, item_id: ItemId, json_out: JsonFlag = False) -> None:
    """Show every version of a memory with the event that made it, oldest first."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entries = mos.history(item_id)
    if json_out:
        _render.print_json(_render.dumps(entries))
    else:
        _render.history(entries)


def diff(
    ctx: typer.Context,
    item_id: ItemId,
    from_version: Annotated[int, typer.Argument(help="The older version.")],
    to_version: Annotated[int, typer.Argument(help="The newer version.")],
    json_out: JsonFlag = False,
) -> None:
    """Show what changed in a memory between two of its versions."""
    with open_memos(ctx, json_errors=json_out) as mos:
        changes = mos.diff(item_id, from_version, to_version)
    if json_out:
        _render.print_json(changes.model_dump(mode="json"))
    else:
        _render.diff(changes)
