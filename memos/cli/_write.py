"""Commands that change memories: add, update, delete, rollback."""

from typing import Annotated

import typer

from memos.cli._options import CubeOption, ItemId, ReasonOption, UserOption
from memos.cli._parse import meta_pairs
from memos.cli._session import open_memos
from memos.errors import InvalidInput

TagOption = Annotated[
    list[str] | None, typer.Option("--tag", "-t", help="A tag; repeat for several.")
]
MetaOption = Annotated[
    list[str] | None,
    typer.Option(
        "--meta",
        "-m",
        metavar="KEY=VALUE",
        help="Metadata as key=value; repeat for several. Numbers, true, false and null are "
        "stored as JSON values, anything else as text.",
    ),
]


def add(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The memory's text.")],
    cube: CubeOption,
    user: UserOption = None,
    tag: TagOption = None,
    meta: MetaOption = None,
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="The conversation it came from.")
    ] = None,
) -> None:
    """Add a memory to a cube and print its new id (only the id, so scripts can capture it)."""
    with open_memos(ctx) as mos:
        added = mos.add(
            text, cube=cube, user=user, tags=tag, metadata=meta_pairs(meta), session=session
        )
    typer.echo(added.id)


def update(
    ctx: typer.Context,
    item_id: ItemId,
    text: Annotated[str, typer.Argument(help="The memory's new text.")],
    expected_version: Annotated[
        int | None,
        typer.Option(
            "--expected-version",
            help="Refuse the update unless the memory is still at this version.",
        ),
    ] = None,
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Replace a memory's text; the old version stays in its history."""
    with open_memos(ctx) as mos:
        item = mos.update(
            item_id, text, user=user, expected_version=expected_version, reason=reason
        )
    typer.echo(f"updated {item.id} to version {item.version}")


def delete(
    ctx: typer.Context, item_id: ItemId, user: UserOption = None, reason: ReasonOption = None
) -> None:
    """Delete a memory. It leaves search, but its history stays and it can be rolled back."""
    with open_memos(ctx) as mos:
        item = mos.delete(item_id, user=user, reason=reason)
    typer.echo(f"deleted {item.id} (version {item.version})")


def rollback(
    ctx: typer.Context,
    item_id: Annotated[
        str | None, typer.Argument(help="The memory to roll back (with --to-version).")
    ] = None,
    to_version: Annotated[
        int | None, typer.Option("--to-version", help="The version whose content comes back.")
    ] = None,
    cube: Annotated[
        str | None, typer.Option("--cube", "-c", help="The cube to roll back (with --to-seq).")
    ] = None,
    to_seq: Annotated[
        int | None,
        typer.Option("--to-seq", help="The event after which the cube's state comes back."),
    ] = None,
    user: UserOption = None,
    reason: ReasonOption = None,
) -> None:
    """Bring back a memory's earlier version, or a whole cube's state after an event.

    Rolling back appends new events; nothing in the log is erased.
    """
    with open_memos(ctx) as mos:
        if item_id is not None and to_version is not None and cube is None and to_seq is None:
            item = mos.rollback(item_id, to_version=to_version, user=user, reason=reason)
            typer.echo(
                f"rolled back {item.id} to the content of version {to_version} "
                f"(now version {item.version})"
            )
        elif item_id is None and to_version is None and cube is not None and to_seq is not None:
            changed = mos.rollback_cube(cube, to_seq=to_seq, user=user, reason=reason)
            typer.echo(
                f"rolled back cube {cube!r} to seq {to_seq}: {len(changed)} memories changed"
            )
        else:
            raise InvalidInput(
                "rollback takes either ID --to-version N, or --cube NAME --to-seq SEQ"
            )
