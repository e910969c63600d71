"""``memos policy``: a cube's governance policies (retention, legal holds, redaction, quotas)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from memos.cli import _render
from memos.cli._options import CubeOption, JsonFlag, ReasonOption
from memos.cli._session import fail, open_memos
from memos.errors import InvalidInput

policy_app = typer.Typer(
    help="A cube's policies: retention, legal holds, redaction on write, quotas.",
    no_args_is_help=True,
)


@policy_app.command("show")
def show(ctx: typer.Context, cube: CubeOption) -> None:
    """Print the cube's policies as JSON (the form `memos policy set` reads)."""
    with open_memos(ctx, json_errors=True) as mos:
        found = mos.governance.policies(cube)
    typer.echo(found.model_dump_json(indent=2))


@policy_app.command("set")
def set_(
    ctx: typer.Context,
    cube: CubeOption,
    file: Annotated[
        Path, typer.Argument(help="A JSON file of the policies ('-': standard input).")
    ],
    reason: ReasonOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Replace the cube's policies with those in FILE (one `policy` event). Setting the
    earlier policies again undoes it; `memos policy show` prints them."""
    from pydantic import ValidationError

    from memos.core._policies import CubePolicies

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        policies = CubePolicies.model_validate_json(text)
    except (OSError, UnicodeDecodeError) as exc:
        fail(InvalidInput(f"cannot read {file}: {exc}"), json_errors=json_out)
    except ValidationError as exc:
        fail(InvalidInput(f"not a cube's policies: {exc}"), json_errors=json_out)
    with open_memos(ctx, json_errors=json_out) as mos:
        info = mos.governance.set_policies(cube, policies, reason=reason)
    if json_out:
        typer.echo(info.model_dump_json())
    else:
        typer.echo(f"policies of cube {info.name!r} set")


@policy_app.command("expire")
def expire(
    ctx: typer.Context, cube: CubeOption, reason: ReasonOption = None, json_out: JsonFlag = False
) -> None:
    """Apply the cube's retention rules now: memories past their time to live and under no
    legal hold are deleted or erased, as their rule says (workers do this as `expire` jobs)."""
    with open_memos(ctx, json_errors=json_out) as mos:
        events = mos.governance.expire(cube, reason=reason)
    if json_out:
        _render.print_json(_render.dumps(events))
    else:
        _render.events(events, with_cube=False)
