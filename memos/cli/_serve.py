"""``memos serve``: the memory server over the data dir (or ``--store``)."""

from typing import Annotated

import typer

from memos.cli._session import reporting, settings


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="The TCP port to listen on.")] = 8000,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", help="The largest request body accepted.")
    ] = 4 * 1024 * 1024,
    max_import_bytes: Annotated[
        int, typer.Option("--max-import-bytes", help="The largest cube or adapter tar accepted.")
    ] = 256 * 1024 * 1024,
    max_text_chars: Annotated[
        int, typer.Option("--max-text-chars", help="The longest memory text accepted.")
    ] = 16_000,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="The most memories one batch add may hold.")
    ] = 1_000,
    max_k: Annotated[int, typer.Option("--max-k", help="The largest k a search may ask.")] = 100,
    faiss_threads: Annotated[
        int, typer.Option("--faiss-threads", help="OpenMP threads FAISS may use per search.")
    ] = 1,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Threads in this process that run queued jobs (default 0: run `memos worker`).",
        ),
    ] = 0,
) -> None:
    """Serve the memory over HTTP (FastAPI): routes under /v1, API keys from `memos keys`."""
    import uvicorn

    from memos.api import ServerSettings, create_app

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
        )
        app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level="warning")
