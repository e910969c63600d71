"""What every command shares: the settings read at the edge, opening the data dir (or
connecting to the server ``--url`` names), and turning a :class:`memos.errors.MemosError` into
one line on stderr and a distinct exit code.

Nothing heavy is imported here: the engine (numpy, FAISS, the stores) is imported when a
command opens a data dir, and only the HTTP client when it connects to a server, so a command
pays for what it uses.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from memos.errors import (
    AccessDenied,
    Conflict,
    IntegrityError,
    InvalidInput,
    MemosError,
    NotFound,
    StorageError,
    Unauthenticated,
)

if TYPE_CHECKING:
    from memos.engine._handle import Handle
    from memos.engine._mos import MemOS
    from memos.llm import OpenAICompatible


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
    # a key the server does not know, or revoked: refused like a key that may not
    (Unauthenticated, ExitCode.ACCESS_DENIED),
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
    # a MemOS server to work on instead of any local data: http(s)://host:port
    url: str | None = None
    # the server's API key; kept out of repr so no traceback or log line shows it
    api_key: str | None = field(default=None, repr=False)
    # an OpenAI-compatible model chat goes through instead of the local one, and its key
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)


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
) -> Iterator["Handle"]:
    """The server ``--url`` names, or else the data dir named by ``--data-dir`` (or the store
    ``--store`` names), closed on exit; errors become :func:`fail`.

    Only commands that bring data in (``cube create``, ``import``) pass ``create=True``; every
    other command on a missing data dir fails rather than leaving an empty one behind.
    """
    edge = settings(ctx)
    with reporting(json_errors=json_errors):
        handle = _connected(edge) if edge.url is not None else _opened(edge, create)
        with handle:
            yield handle


@contextmanager
def open_local(
    ctx: typer.Context, what: str, *, json_errors: bool = False, create: bool = False
) -> Iterator["MemOS"]:
    """Like :func:`open_memos` for a command that works on the data itself (``what`` names
    it): refused with ``--url``, since the server offers it no route."""
    edge = settings(ctx)
    with reporting(json_errors=json_errors):
        refuse_remote(edge, what)
        with _opened(edge, create) as mos:
            yield mos


def refuse_remote(edge: Settings, what: str) -> None:
    """Raise :class:`InvalidInput` when ``--url`` is set: ``what`` runs on a local data dir."""
    if edge.url is not None:
        raise InvalidInput(
            f"{what} works on a local data dir or --store, not on a server: "
            "run it without --url (and MEMOS_URL unset) where the data is"
        )


def _connected(edge: Settings) -> "Handle":
    from memos.engine._remote import RemoteMemOS

    if not edge.api_key:
        raise InvalidInput("--url needs an API key: pass --api-key or set MEMOS_API_KEY")
    return RemoteMemOS(edge.url or "", api_key=edge.api_key)


def _opened(edge: Settings, create: bool) -> "MemOS":
    from memos.core._store import open_store
    from memos.engine._mos import MemOS

    model = _upstream(edge) or edge.model
    if edge.store is None:
        return MemOS.open(edge.data_dir, create=create, model=model, model_cache=edge.model_cache)
    store = open_store(edge.store, create=create)
    return MemOS(store, model=model, model_cache=edge.model_cache)


def _upstream(edge: Settings) -> "OpenAICompatible | None":
    """The upstream model the options name; its HTTP client loads only when they name one."""
    if edge.llm_url is None and edge.llm_model is None:
        return None
    from memos.llm._openai_compatible import configured_upstream

    return configured_upstream(
        edge.llm_url, edge.llm_model, api_key=edge.llm_api_key, local_model=edge.model
    )
