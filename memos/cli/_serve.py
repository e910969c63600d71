"""``memos serve``: the memory server over the data dir (or ``--store``).

It says on stderr where it listens and which store it serves, logs one line per request
(``memos.access``: method, path, status, milliseconds; never a key, a query string or a body)
in the format ``memos worker`` logs its jobs, and says when it stops."""

import logging
import socket
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer

from memos.api._settings import ServerSettings
from memos.cli._session import reporting, settings

if TYPE_CHECKING:
    import uvicorn

LOG_FORMAT = "%(asctime)s %(name)s %(message)s"  # as `memos worker` logs


def _default(field: str) -> Any:
    """The server's own default, so the CLI states none of its own."""
    return ServerSettings.model_fields[field].default


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The TCP port to listen on.")] = 8000,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="The largest request body accepted.")
    ] = _default("max_body_bytes"),
    max_import_bytes: Annotated[
        int, typer.Option("--max-import-bytes", help="The largest cube or adapter tar accepted.")
    ] = _default("max_import_bytes"),
    max_text_chars: Annotated[
        int, typer.Option("--max-text-chars", help="The longest memory text accepted.")
    ] = _default("max_text_chars"),
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="The most memories one batch add may hold.")
    ] = _default("max_batch"),
    max_k: Annotated[
        int, typer.Option("--max-k", help="The largest k a search may ask.")
    ] = _default("max_k"),
    faiss_threads: Annotated[
        int, typer.Option("--faiss-threads", help="OpenMP threads FAISS may use per search.")
    ] = _default("faiss_threads"),
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Threads in this process that run queued jobs (0: they wait for `memos worker`).",
        ),
    ] = _default("workers"),
    tick_interval: Annotated[
        float,
        typer.Option(
            "--tick-interval",
            help="Seconds between the scheduler's ticks, which queue its migrations as jobs "
            "(0: no ticks).",
        ),
    ] = _default("tick_interval_s"),
) -> None:
    """Serve the memory over HTTP (FastAPI): routes under /v1, API keys from `memos keys`."""
    import uvicorn

    from memos.api import create_app

    edge = settings(ctx)
    with reporting():
        config = ServerSettings(
            store=edge.store or f"sqlite:///{edge.data_dir.expanduser().resolve()}",
            snapshot_dir=None if edge.store else edge.data_dir.expanduser().resolve() / "index",
            model=None if edge.model is None else str(edge.model),
            model_cache=edge.model_cache,
            max_body_bytes=max_body_bytes,
            max_import_bytes=max_import_bytes,
            max_text_chars=max_text_chars,
            max_batch=max_batch,
            max_k=max_k,
            faiss_threads=faiss_threads,
            workers=workers,
            tick_interval_s=tick_interval,
            llm_url=edge.llm_url,
            llm_model=edge.llm_model,
            llm_api_key=edge.llm_api_key,
        )
        app = create_app(config)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    data_dir = edge.data_dir.expanduser().resolve()
    served = f"store {shown_store(edge.store)}" if edge.store else f"data dir {data_dir}"
    if edge.llm_url is not None:
        served += f"; chat through {edge.llm_model} at {shown_store(edge.llm_url)}"
    server = _announcing_server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", log_config=None), served
    )
    server.run()
    if not server.started:  # the port was taken, or the app did not start: uvicorn said why
        raise typer.Exit(1)


def shown_store(url: str) -> str:
    """``url`` with any password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def listening_url(sockets: list[socket.socket]) -> str:
    """The URL a client reaches the first of the server's sockets at (the port the OS chose,
    for ``--port 0``)."""
    host, port = sockets[0].getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announcing_server(config: "uvicorn.Config", served: str) -> "uvicorn.Server":
    """uvicorn's server, saying on stderr where it listens once it does, and when it stops."""
    import uvicorn

    class AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                url = listening_url([s for server in self.servers for s in server.sockets])
                typer.echo(f"memos serve listening on {url} ({served})", err=True)
                typer.echo(f"API reference at {url}/docs; Ctrl+C stops", err=True)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            typer.echo("memos serve shutting down: finishing requests and jobs", err=True)
            await super().shutdown(sockets)
            # said here: after a signal, uvicorn raises it again once this returns
            typer.echo("memos serve stopped", err=True)

    return AnnouncingServer(config)
