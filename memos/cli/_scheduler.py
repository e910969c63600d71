"""``memos scheduler``: what the scheduler would do on a cube and why, doing it, and setting
its policy and budgets."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from memos.cli import _render
from memos.cli._options import CubeOption, JsonFlag, ReasonOption, UserOption
from memos.cli._parse import parsed_json_object
from memos.cli._session import open_memos

if TYPE_CHECKING:
    from memos import Event

scheduler_app = typer.Typer(
    help="The scheduler: it moves a cube's memories between tiers from how they are used "
    "(hot groups retrieved together become KV blocks, cold blocks go, a stable hot set is "
    "consolidated into an adapter, a cold or oversized index is re-encoded), within the cube's "
    "budgets. See what it would do, run it, undo a migration, and set its policy and budgets.",
    no_args_is_help=True,
)


@scheduler_app.command("status")
def status(ctx: typer.Context, cube: CubeOption, json_out: JsonFlag = False) -> None:
    """Show the cube's scheduler policy, parameters and budgets, and what its tiers hold."""
    with open_memos(ctx, json_errors=json_out) as mos:
        info = mos.get_cube(cube)
        plan = mos.scheduler.plan(cube)
    config = info.scheduler.model_dump(mode="json") if info.scheduler else None
    if json_out:
        _render.print_json({"config": config, "usage": plan.usage.model_dump(mode="json"),
                            "budgets": plan.budgets.model_dump(mode="json")})  # fmt: skip
        return
    _render.scheduler_status(info, plan)


@scheduler_app.command("plan")
def plan(ctx: typer.Context, cube: CubeOption, json_out: JsonFlag = False) -> None:
    """Show what the next tick would do on the cube, with scores and reasons; change nothing."""
    with open_memos(ctx, json_errors=json_out) as mos:
        found = mos.scheduler.plan(cube)
    if json_out:
        _render.print_json(found.model_dump(mode="json"))
    else:
        _render.schedule(found)


@scheduler_app.command("run")
def run(
    ctx: typer.Context, cube: CubeOption, user: UserOption = None, json_out: JsonFlag = False
) -> None:
    """Run one tick on the cube now: carry out its plan, one event per migration."""
    with open_memos(ctx, json_errors=json_out) as mos:
        report = mos.scheduler.tick(cube, user=user)
    if json_out:
        _render.print_json(report.model_dump(mode="json"))
        return
    _render.schedule(report.plan)
    typer.echo(f"{len(report.events)} migrations, events {_seqs(report.events)}")


@scheduler_app.command("revert")
def revert(
    ctx: typer.Context,
    seq: Annotated[int, typer.Argument(help="The seq of the migration's event.", min=1)],
    cube: CubeOption,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Undo a migration (see `memos audit migrations`): what it built goes, what it dropped
    comes back, a re-encode or refit gives way to the codec before it."""
    with open_memos(ctx, json_errors=json_out) as mos:
        events = mos.scheduler.revert(cube, seq, user=user, reason=reason)
    if json_out:
        _render.print_json(_render.dumps(events))
    else:
        _render.events(events, with_cube=False)


@scheduler_app.command("configure")
def configure(
    ctx: typer.Context,
    cube: CubeOption,
    policy: Annotated[
        str | None, typer.Option("--policy", help="The policy by name (default: balanced).")
    ] = None,
    parameters: Annotated[
        str | None,
        typer.Option("--parameters", help="The policy's parameters as JSON: '{\"hot_min\": 2}'."),
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets",
            help='Budgets as JSON, null for no limit: \'{"kv_bytes": 100000000, "kv_blocks": 8}\'.',
        ),
    ] = None,
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Whether background ticks run on the cube."),
    ] = None,
    user: UserOption = None,
    reason: ReasonOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Set the cube's scheduler policy, parameters or budgets: one configure event."""
    with open_memos(ctx, json_errors=json_out) as mos:
        info = mos.scheduler.configure(
            cube, policy=policy,
            parameters=None if parameters is None else parsed_json_object(parameters, "parameters"),
            budgets=None if budgets is None else parsed_json_object(budgets, "budgets"),
            enabled=enable, user=user, reason=reason,
        )  # fmt: skip
    if json_out:
        _render.print_json(info.model_dump(mode="json"))
    else:
        _render.scheduler_status(info, None)


def _seqs(events: Sequence["Event"]) -> str:
    seqs = [str(e.seq) for e in events]
    return ", ".join(seqs) if seqs else "none"
