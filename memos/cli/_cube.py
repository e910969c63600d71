"""``memos cube``: create and list cubes."""

from typing import Annotated

import typer

from memos.cli import _render
from memos.cli._options import JsonFlag
from memos.cli._session import open_memos

cube_app = typer.Typer(
    help="Create and list cubes, the named containers memories live in.",
    no_args_is_help=True,
)


@cube_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new cube's name.")],
    owner: Annotated[
        str, typer.Option("--owner", "-o", help="The principal who owns the cube.")
    ] = "local",
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            help="Embedding model: all-MiniLM-L6-v2 (the default) or hash-<dim> for a fast, "
            "deterministic test embedder.",
        ),
    ] = None,
    codec: Annotated[
        str, typer.Option("--codec", help="How vectors are stored in the index.")
    ] = "fp32",
) -> None:
    """Create a cube (and the data dir, if it does not exist yet)."""
    with open_memos(ctx, create=True) as mos:
        info = mos.create_cube(name, owner=owner, embedder=embedder, codec=codec)
    typer.echo(
        f"created cube {info.name!r} (owner {info.owner}, embedder {info.embedder}, "
        f"{info.dim}-d, {info.codec})"
    )


@cube_app.command("list")
def list_(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List the cubes in the data dir."""
    with open_memos(ctx, json_errors=json_out) as mos:
        infos = mos.list_cubes()
    if json_out:
        _render.print_json(_render.dumps(infos))
    else:
        _render.cubes(infos)
