"""``memos kv``: build, list and drop the KV caches of memory blocks (activation memory)."""

from typing import Annotated

import typer

from memos.cli import _render
from memos.cli._options import CubeOption, JsonFlag, ReasonOption, UserOption
from memos.cli._session import open_memos

kv_app = typer.Typer(
    help="Build, list and drop KV caches: memory blocks prefilled once by the model, so a chat "
    "over those memories starts from the cache instead of recomputing them.",
    no_args_is_help=True,
)


@kv_app.command("build")
def build(
    ctx: typer.Context,
    cube: CubeOption,
    item: Annotated[
        list[str] | None,
        typer.Option("--item", "-i", help="A memory of the block, in order; repeat for several."),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", "-q", help="Build the block from the memories best matching this."),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many memories a --query block holds.")] = 8,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="How the cache is stored: fp32, bf16 or int8. Default: the cube's --kv-dtype.",
        ),
    ] = None,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the new entry as JSON.")] = False,
) -> None:
    """Prefill a block of memories (--item ID... or --query) and store its KV cache."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entry = mos.kv.build(
            cube, item or None, query=query, k=k, dtype=dtype, user=user, reason=reason
        )
    if json_out:
        _render.print_json(entry.model_dump(mode="json"))
    else:
        typer.echo(
            f"built {entry.id} in cube {entry.cube!r}: {len(entry.sources)} memories, "
            f"{entry.tokens} tokens, {entry.manifest.dtype}, {entry.size} bytes"
        )


@kv_app.command("ls")
def ls(ctx: typer.Context, cube: CubeOption, json_out: JsonFlag = False) -> None:
    """List a cube's stored KV caches, oldest first."""
    with open_memos(ctx, json_errors=json_out) as mos:
        entries = mos.kv.list(cube)
    if json_out:
        _render.print_json(_render.dumps(entries))
    else:
        _render.kv_entries(entries)


@kv_app.command("drop")
def drop(
    ctx: typer.Context,
    entry_id: Annotated[str, typer.Argument(help="The KV entry's id, as `memos kv ls` shows.")],
    cube: CubeOption,
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Retire a KV cache: chats stop using it. One kv_drop event in the cube's log."""
    with open_memos(ctx) as mos:
        event = mos.kv.drop(cube, entry_id, user=user, reason=reason)
    typer.echo(f"dropped {entry_id} from cube {cube!r} (event {event.seq})")
