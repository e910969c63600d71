"""What every command shares: the settings read at the edge, opening the data dir, and turning
a :class:`memos.errors.MemosError` into one line on stderr and a distinct exit code."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NoReturn

import typer

from memos import MemOS, open_store
from memos.errors import (
    AccessDenied,
    Conflict,
    IntegrityError,
    InvalidInput,
    MemosError,
    NotFound,
    StorageError,
)


class ExitCode(IntEnum):
    """Exit statuses of the ``memos`` command; one per kind of failure."""

    OK = 0
    ERROR = 1
    INVALID_INPUT = 2  # also what click uses for usage errors
    NOT_FOUND = 3
    CONFLICT = 4
    INTEGRITY = 5
    STORAGE = 6
    ACCESS_DENIED = 7


_EXIT_CODES: tuple[tuple[type[MemosError], ExitCode], ...] = (
    (InvalidInput, ExitCode.INVALID_INPUT),
    (NotFound, ExitCode.NOT_FOUND),
    (Conflict, ExitCode.CONFLICT),
    (IntegrityError, ExitCode.INTEGRITY),
    (StorageError, ExitCode.STORAGE),
    (AccessDenied, ExitCode.ACCESS_DENIED),
)


@dataclass(frozen=True)
class Settings:
    """Everything the root command reads from options and the environment."""

    data_dir: Path
    # a store URL (redis://...) used instead of the data dir's embedded SQLite store
    store: str | None = None
    # the language model for chat and KV caches: a HF model dir or .gguf; None: the bundled one
    model: Path | None = None
    model_cache: Path | None = None


def settings(ctx: typer.Context) -> Settings:
    found = ctx.find_object(Settings)
    if found is None:  # only when a command is invoked without the root callback
        raise RuntimeError("the memos root command did not run")
    return found


def exit_code(error: MemosError) -> ExitCode:
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return ExitCode.ERROR


def fail(error: MemosError, *, json_errors: bool = False) -> NoReturn:
    """Report ``error`` on stderr (one line, or the JSON envelope) and exit non-zero."""
    if json_errors:
        typer.echo(json.dumps(error.to_dict(), ensure_ascii=False, default=str), err=True)
    else:
        typer.echo(f"error: {' '.join(error.message.split())}", err=True)
    raise typer.Exit(exit_code(error))


@contextmanager
def reporting(*, json_errors: bool = False) -> Iterator[None]:
    """Turn any MemosError raised inside the block into :func:`fail`.

    A file system error (an export path under a file, a directory without write permission)
    is the user's environment, not a bug, so it is reported the same way, as a storage error.
    """
    try:
        yield
    except MemosError as error:
        fail(error, json_errors=json_errors)
    except OSError as error:
        message = f"{error.strerror}: {error.filename}" if error.filename else str(error)
        fail(StorageError(message), json_errors=json_errors)


@contextmanager
def open_memos(
    ctx: typer.Context, *, json_errors: bool = False, create: bool = False
) -> Iterator[MemOS]:
    """The data dir named by ``--data-dir`` (or the store ``--store`` names), closed on exit;
    errors become :func:`fail`.

    Only commands that bring data in (``cube create``, ``import``) pass ``create=True``; every
    other command on a missing data dir fails rather than leaving an empty one behind.
    """
    edge = settings(ctx)
    with reporting(json_errors=json_errors), _opened(edge, create) as mos:
        yield mos


def _opened(edge: Settings, create: bool) -> MemOS:
    if edge.store is None:
        return MemOS.open(
            edge.data_dir, create=create, model=edge.model, model_cache=edge.model_cache
        )
    store = open_store(edge.store, create=create)
    return MemOS(store, model=edge.model, model_cache=edge.model_cache)
