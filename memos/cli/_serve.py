"""``memos serve``: the memory server over the data dir (or ``--store``)."""

from typing import Annotated, Any

import typer

from memos.api._settings import ServerSettings
from memos.cli._session import reporting, settings


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
        )
        app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level="warning")
