"""The ``memos`` command line: typer + rich, thin over the SDK (see docs/cli.md)."""

from memos.cli._app import app, main
from memos.cli._session import ExitCode

__all__ = ["ExitCode", "app", "main"]
