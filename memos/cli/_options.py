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

# the filters of search and ls
OfUser = Annotated[str | None, typer.Option("--user", "-u", help="Only memories of this user.")]
TagFilter = Annotated[
    list[str] | None,
    typer.Option("--tag", "-t", help="Only memories with this tag; repeat to require all."),
]
SessionFilter = Annotated[
    str | None, typer.Option("--session", "-s", help="Only memories from this session.")
]
Since = Annotated[
    str | None,
    typer.Option("--since", metavar="TIME", help="Only memories from this ISO 8601 time on."),
]
Until = Annotated[
    str | None,
    typer.Option("--until", metavar="TIME", help="Only memories up to this ISO 8601 time."),
]
