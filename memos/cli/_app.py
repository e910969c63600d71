"""The ``memos`` command: a typer app whose commands are thin calls into :class:`memos.MemOS`.

Settings are read here, at the edge (options and environment variables), and handed down.
With ``--url`` (or ``MEMOS_URL``) a command works on that server through the HTTP client
instead of on a local data dir; the few that need the data itself refuse (see
:data:`LOCAL_ONLY` and :func:`memos.cli._session.open_local`).
"""

import os
from pathlib import Path
from typing import Annotated

import typer

from memos.cli import _audit, _chat, _forget, _jobs, _mcp, _read, _write
from memos.cli._cube import cube_app
from memos.cli._help import MemosGroup
from memos.cli._keys import keys_app
from memos.cli._kv import kv_app
from memos.cli._lora import lora_app
from memos.cli._policy import policy_app
from memos.cli._scheduler import scheduler_app
from memos.cli._session import Settings, fail, refuse_remote
from memos.errors import InvalidInput, MemosError

# top-level commands that run a process over local data, which no server route offers
LOCAL_ONLY = {"serve": "`memos serve`", "worker": "`memos worker`", "keys": "`memos keys`"}

app = typer.Typer(
    name="memos",
    cls=MemosGroup,
    help="Inspect, search, diff, verify and roll back what MemOS memory holds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(cube_app, name="cube")
app.add_typer(kv_app, name="kv")
app.add_typer(lora_app, name="lora")
app.add_typer(keys_app, name="keys")
app.add_typer(_jobs.jobs_app, name="jobs")
app.add_typer(scheduler_app, name="scheduler")
app.add_typer(_audit.audit_app, name="audit")
app.add_typer(policy_app, name="policy")
app.command("worker")(_jobs.worker)
app.command("add")(_write.add)
app.command("search")(_read.search)
app.command("ls")(_read.ls)
app.command("show")(_read.show)
app.command("update")(_write.update)
app.command("delete")(_write.delete)
app.command("history")(_read.history)
app.command("diff")(_read.diff)
app.command("rollback")(_write.rollback)
app.command("log")(_audit.log)
app.command("verify")(_audit.verify)
app.command("forget")(_forget.forget)
app.command("gc")(_forget.gc)
app.command("export")(_audit.export)
app.command("import")(_audit.import_)
app.command("chat")(_chat.chat)
app.command("mcp")(_mcp.mcp)


def _print_version(value: bool) -> None:
    if value:
        from memos import __version__

        typer.echo(f"memos {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            "-d",
            metavar="DIR",
            envvar="MEMOS_DATA_DIR",
            help="The MemOS data directory.",
            show_default=True,
        ),
    ] = Path(".memos"),
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            envvar="MEMOS_STORE",
            help="A store URL to use instead of the data dir, e.g. "
            "redis://127.0.0.1:6379/0?prefix=memos (the Redis store servers share).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            metavar="PATH",
            envvar="MEMOS_MODEL",
            help="The language model for chat, KV caches and LoRA adapters: a Hugging Face model "
            "directory or a .gguf file. Default: the bundled SmolLM2-135M-Instruct.",
            show_default=False,
        ),
    ] = None,
    model_cache: Annotated[
        Path | None,
        typer.Option(
            "--model-cache",
            metavar="DIR",
            envvar="MEMOS_MODEL_CACHE",
            help="Where a .gguf model (the bundled one too) is converted once for loading. "
            "Default: ~/.cache/memos/models.",
            show_default=False,
        ),
    ] = None,
    llm_url: Annotated[
        str | None,
        typer.Option(
            "--llm-url",
            metavar="URL",
            envvar="MEMOS_LLM_URL",
            help="Chat through this OpenAI-compatible API instead of a local model (vLLM, Ollama, "
            "llama.cpp, a hosted API, another `memos serve`), e.g. http://localhost:11434/v1; "
            "its key comes from MEMOS_LLM_API_KEY. `memos serve` is then a memory proxy.",
            show_default=False,
        ),
    ] = None,
    llm_model: Annotated[
        str | None,
        typer.Option(
            "--llm-model",
            metavar="NAME",
            envvar="MEMOS_LLM_MODEL",
            help="The model to ask at --llm-url (e.g. memos:CUBE for another memos serve).",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="URL",
            envvar="MEMOS_URL",
            help="A MemOS server (`memos serve`) to work on instead of a local data dir, e.g. "
            "http://127.0.0.1:8000; needs --api-key.",
            show_default=False,
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            envvar="MEMOS_API_KEY",
            help="The API key for --url (from `memos keys create`); prefer MEMOS_API_KEY, "
            "which other users cannot read from the process list.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Inspect, search, diff, verify and roll back what MemOS memory holds."""
    edge = Settings(
        data_dir=data_dir,
        store=store,
        model=model,
        model_cache=model_cache,
        url=url or None,
        api_key=api_key,
        llm_url=llm_url,
        llm_model=llm_model,
        # read here, at the edge, never from an option: a key in argv is in the process list
        llm_api_key=os.environ.get("MEMOS_LLM_API_KEY") or None,
    )
    command = ctx.invoked_subcommand
    if edge.url is not None and edge.llm_url is not None:
        fail(InvalidInput("--llm-url chats on local data; over --url the server's model answers"))
    if command in LOCAL_ONLY:
        try:
            refuse_remote(edge, LOCAL_ONLY[command])
        except MemosError as error:
            fail(error)
    ctx.obj = edge


def main() -> None:
    """The ``memos`` console script."""
    app(prog_name="memos")
