"""Option and argument types shared by several commands."""

from typing import Annotated

import typer

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
]
CubeOption = Annotated[str, typer.Option("--cube", "-c", help="The cube to work on.")]
ItemId = Annotated[str, typer.Argument(help="The memory's id, as printed by `memos add`.")]
UserOption = Annotated[
    str | None,
    typer.Option("--user", "-u", help="Who makes the change (recorded as the event's actor)."),
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why; recorded in the event log.")
]
