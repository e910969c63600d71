"""``memos keys``: the server's API keys (made here, shown once, stored hashed)."""

from typing import Annotated

import typer

from memos.cli import _render
from memos.cli._options import JsonFlag
from memos.cli._session import open_local

keys_app = typer.Typer(
    help="Create, list and revoke the API keys `memos serve` accepts.", no_args_is_help=True
)


@keys_app.command("create")
def create(
    ctx: typer.Context,
    principal: Annotated[str, typer.Option("--principal", "-p", help="Whom the key stands for.")],
    json_out: JsonFlag = False,
) -> None:
    """Make an API key for a principal and print it; it is shown this once."""
    with open_local(ctx, "`memos keys`", json_errors=json_out, create=True) as mos:
        key, token = mos.keys.create(principal)
    if json_out:
        _render.print_json({"id": key.id, "principal": key.principal, "key": token})
    else:
        typer.echo(token)
        typer.echo(
            f"key {key.id} for {key.principal}: store it now, it is not shown again", err=True
        )


@keys_app.command("ls")
def list_(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """List the keys (never their secrets), revoked ones too."""
    with open_local(ctx, "`memos keys`", json_errors=json_out) as mos:
        keys = mos.keys.list()
    if json_out:
        _render.print_json([k.model_dump(mode="json", exclude={"secret_sha256"}) for k in keys])
        return
    for key in keys:
        revoked = "" if key.revoked_at is None else f"  revoked {key.revoked_at:%Y-%m-%d %H:%M}"
        typer.echo(f"{key.id}  {key.principal}  created {key.created_at:%Y-%m-%d %H:%M}{revoked}")


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id, as `memos keys ls` lists it.")],
) -> None:
    """Revoke a key: the server refuses it from the next request on."""
    with open_local(ctx, "`memos keys`") as mos:
        key = mos.keys.revoke(key_id)
    typer.echo(f"revoked key {key.id} of {key.principal}")
