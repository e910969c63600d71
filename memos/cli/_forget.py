"""``memos forget``: erase a user's (or a filter's) memories from every tier, with a receipt;
``memos gc``: delete the blobs nothing can read any more."""

from pathlib import Path
from typing import Annotated

import typer

from memos.cli import _render
from memos.cli._options import JsonFlag, ReasonOption
from memos.cli._parse import meta_pairs
from memos.cli._session import fail, open_memos
from memos.errors import InvalidInput


def forget(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Whose memories to erase.")
    ] = None,
    cube: Annotated[
        str | None,
        typer.Option("--cube", "-c", help="Only this cube (default: every cube you own)."),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            "--where",
            "-w",
            help="Only memories whose metadata has key=value (repeat for several; values "
            "read as in `memos add --meta`).",
        ),
    ] = None,
    adapters: Annotated[
        str,
        typer.Option(
            "--adapters",
            help="revert: drop the adapter versions that saw a memory; retrain: also train "
            "a new version on what is left; dampen: also make a new version with the weights "
            "that mattered to the memories dampened (no training; faster, less thorough).",
        ),
    ] = "revert",
    receipt: Annotated[
        Path | None,
        typer.Option("--receipt", help="Write the erasure receipt (JSON) to this file."),
    ] = None,
    rewrite: Annotated[
        bool,
        typer.Option(
            "--rewrite-files",
            help="Then rewrite the store's files (SQLite: VACUUM; Redis: BGREWRITEAOF and "
            "BGSAVE when it persists). The operator only.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    reason: ReasonOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Erase memories for good: every version, the payloads of their events, their vectors,
    keyword entries and access statistics, the KV blocks and adapter versions built from
    them. The log still verifies; `memos verify --receipt FILE` checks the receipt."""
    matching = meta_pairs(where)
    if user is None and not matching:
        fail(InvalidInput("forget needs --user or --where"), json_errors=json_out)
    if not yes and not json_out:
        whom = " and ".join(
            [*([f"user {user!r}"] if user else []), *(f"{k}={v!r}" for k, v in matching.items())]
        )
        typer.confirm(f"Erase every memory of {whom} for good?", abort=True)
    with open_memos(ctx, json_errors=json_out) as mos:
        made = mos.forget(user=user, cube=cube, where=matching, adapters=adapters, reason=reason)
    text = made.model_dump_json(indent=2)
    if receipt is not None:
        receipt.write_text(text + "\n", encoding="utf-8")
    if json_out:
        typer.echo(text)
    else:
        _render.erasure(made)
        for line in made.files:
            typer.echo(line)


def gc(
    ctx: typer.Context,
    grace_s: Annotated[
        float | None,
        typer.Option(
            "--grace-s",
            min=0,
            help="Keep blobs younger than this many seconds (a commit may be about to name "
            "them). Default: 3600.",
            show_default=False,
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Delete the blobs nothing can read any more: the caches of dropped KV blocks and what
    refused commits left. Blobs of standing artifacts, and of adapter versions and codec
    states the log recorded, stay. The operator only."""
    with open_memos(ctx, json_errors=json_out) as mos:
        from memos.engine._collect import DEFAULT_GRACE_S

        grace_s = DEFAULT_GRACE_S if grace_s is None else grace_s
        done = mos.collect_blobs(grace_s=grace_s)
    if json_out:
        typer.echo(done.model_dump_json())
    else:
        typer.echo(
            f"deleted {len(done.deleted)} blob(s); kept {done.kept} ({done.young} unnamed but "
            f"younger than {grace_s:g} s)"
        )
