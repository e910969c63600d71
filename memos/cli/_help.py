"""How options read in ``--help``: ``--cube CUBE``, ``-k K``, ``--json`` rather than typer's
``<str>``, ``<int>`` and ``<bool>`` type labels, which say nothing about what a value means
and put a value after flags that take none."""

from __future__ import annotations

from typing import Any

from typer import _click
from typer._click.decorators import help_option
from typer.core import TyperArgument, TyperGroup, TyperOption

_HELP_NAMES = ["--help"]


class MemosGroup(TyperGroup):
    """The root ``memos`` group: typer builds every subcommand before the root, so tidying
    from here reaches all of them."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        tidy(self)


def tidy(command: _click.Command) -> None:
    """Give ``command``, and every command under it, the metavars of :func:`metavar`."""
    for param in command.params:
        param.metavar = metavar(param)
    if command.add_help_option and not any("--help" in p.opts for p in command.params):
        # a --help of the command's own, so it too shows no value (typer's makes one per call)
        help_option(_HELP_NAMES)(command)
        command.params[-1].metavar = ""
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)


def metavar(param: _click.Parameter) -> str | None:
    """An explicit metavar stays; a flag gets none; an option with choices keeps typer's
    list of them; any other value is named after its parameter (``--tag TAG``)."""
    if param.metavar is not None:
        return param.metavar
    if isinstance(param, TyperOption) and param.is_flag:
        return ""
    if isinstance(param, TyperOption) and param.type_descriptor.is_choice:
        return None
    if isinstance(param, TyperOption | TyperArgument) and param.name:
        return param.name.upper()
    return None
