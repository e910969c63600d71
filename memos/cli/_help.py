"""How options and arguments read in ``--help``: ``--cube CUBE``, ``-k K``, ``--json``, and
``memos add [OPTIONS] TEXT``, rather than typer's ``<str>``, ``<int>`` and ``<bool>`` type
labels (which say nothing about what a value means and put a value after flags that take none)
and its ``{TEXT}`` for a required argument."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import typer
from typer import _click
from typer._click.decorators import help_option
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_HELP_NAMES = ["--help"]

# Subcommands whose module is imported only when they run or show their own help, each with
# the line ``memos --help`` lists: `memos serve` reads the server's settings (pydantic-settings),
# which every other command would otherwise pay for at start-up.
LAZY: dict[str, tuple[str, str, str]] = {
    "serve": (
        "memos.cli._serve",
        "serve",
        "Serve the memory over HTTP (FastAPI): routes under /v1, API keys from `memos keys`.",
    ),
}


class MemosGroup(TyperGroup):
    """The root ``memos`` group: typer builds every subcommand before the root, so tidying
    from here reaches all of them."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        tidy(self)
        lazy = {name: LazyCommand(name, *source) for name, source in LAZY.items()}
        self.commands = {**lazy, **self.commands}


class LazyCommand(TyperCommand):
    """A subcommand listed by its help line and built from its module on first use."""

    def __init__(self, name: str, module: str, function: str, help_line: str) -> None:
        super().__init__(name, help=help_line, short_help=help_line, add_help_option=False)
        self._source = (module, function)
        self._built: _click.Command | None = None

    def built(self) -> _click.Command:
        if self._built is None:
            module, function = self._source
            single = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
            single.command(self.name)(getattr(import_module(module), function))
            self._built = typer.main.get_command(single)
            tidy(self._built)
        return self._built

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: _click.Context | None = None,
        **extra: Any,
    ) -> _click.Context:
        # the context is the built command's, so click invokes that one
        return self.built().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: _click.Context) -> Any:
        return self.built().invoke(ctx)


class NamedArgument(TyperArgument):
    """An argument as help shows it: by its name (``TEXT``; ``[TEXT]`` when optional), with no
    type label beside it."""

    def display_type_rich(self, ctx: _click.Context) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return f"{name}..." if self.nargs != 1 else name


def tidy(command: _click.Command) -> None:
    """Give ``command``, and every command under it, the metavars of :func:`metavar`, and its
    arguments the help of :class:`NamedArgument`."""
    for param in command.params:
        param.metavar = metavar(param)
        if type(param) is TyperArgument:
            param.__class__ = NamedArgument
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
