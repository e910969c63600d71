"""The app factory: one ``MemOS`` over the configured store, the routes, auth, limits and
metrics. Nothing happens at import; ``create_app`` is called by ``memos serve`` (or a test)."""

from __future__ import annotations

import dataclasses
import logging
import sys
import sysconfig
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import faiss
from fastapi import FastAPI, Request, Response
from memos.schedulers import Ticker, Worker
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.routing import Route

from memos import ItemFilter, JobState, Limits, MemOS, __version__, open_store
from memos.core._derived import KV_KIND
from memos.core._jobs import UNFINISHED
from memos.embedding import make_embedder
from memos.integrations.mcp import HttpEndpoint, http_app, mcp_server
from memos.llm import OpenAICompatible
from memos.llm._openai_compatible import configured_upstream

from . import _errors
from ._deps import Caller, api_key
from ._docs import ASSETS_PATH, DOCS_PATH, add_docs
from ._middleware import AccessLog, Authenticate, BodyLimit, Timing
from ._openai import openai_router
from ._operation_routes import router_of, upload_paths
from ._settings import ServerSettings

# what a client may read without a key: liveness, the document that describes the routes and
# the page that shows it (see api/_docs.py: the API's shape, never its data)
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", DOCS_PATH})
PUBLIC_PREFIXES = (f"{ASSETS_PATH}/",)
# one line per request (method, path, status, ms); `memos serve` shows it on stderr
ACCESS_LOGGER = "memos.access"
SQLITE_SCHEME = "sqlite:///"
# the MCP server's streamable-HTTP endpoint (see memos.integrations.mcp)
MCP_PATH = "/mcp"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def create_app(settings: ServerSettings, mos: MemOS | None = None) -> FastAPI:
    """The server over ``mos`` (closed with the app), or over a ``MemOS`` opened from
    ``settings.store``."""
    faiss.omp_set_num_threads(settings.faiss_threads)
    mos = mos or open_memos(settings)
    mcp_endpoint = _mcp(mos, server_limits(settings, mos.limits), settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with _job_workers(mos, settings):
            async with mcp_endpoint.run():
                yield
        mos.close()

    # /docs is Swagger UI from the package's own assets (add_docs), never from a CDN
    app = FastAPI(
        title="MemOS", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.mos, app.state.settings = mos, settings
    app.state.limits = server_limits(settings, mos.limits)
    _errors.install(app, private_paths(settings))
    app.include_router(router_of(type(mos)))  # the operations its handles declare
    app.include_router(openai_router())  # /v1/models, /v1/chat/completions
    # an ASGI app of its own, behind the same middleware (Authenticate) as every route
    app.router.routes.append(Route(MCP_PATH, mcp_endpoint, include_in_schema=False))
    latency = _add_health_and_metrics(app)
    add_docs(app)
    # the last added runs first: a request is logged, timed, authenticated, then its body read
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        uploads=dict.fromkeys(upload_paths(type(mos)), settings.max_import_bytes),
    )
    app.add_middleware(
        Authenticate, store=mos.store, public=PUBLIC_PATHS, public_prefixes=PUBLIC_PREFIXES
    )
    app.add_middleware(Timing, histogram=latency)
    app.add_middleware(AccessLog, logger=logging.getLogger(ACCESS_LOGGER))
    return app


def _mcp(mos: MemOS, limits: Limits, settings: ServerSettings) -> HttpEndpoint:
    """The MCP server (streamable HTTP) whose tools act as each request's API key's principal,
    exactly as the REST routes do; its errors name no server path."""
    private = private_paths(settings)

    def principal_handle(request: Request) -> MemOS:
        return mos.as_principal(api_key(request).principal, limits=limits)

    server = mcp_server(
        handle_of=principal_handle, redact=lambda error: _errors.redacted(error, private)
    )
    return http_app(server)


@contextmanager
def _job_workers(mos: MemOS, settings: ServerSettings) -> Iterator[None]:
    """``settings.workers`` threads running queued jobs while the block runs, and the
    scheduler's ticker; each finishes the job in hand before the server stops."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=Worker(mos, lease_s=settings.worker_lease_s).run,
            args=(stop,),
            name=f"memos-job-worker-{n}",
        )
        for n in range(settings.workers)
    ]
    if settings.tick_interval_s > 0:
        ticker = Ticker(mos, interval_s=settings.tick_interval_s)
        threads.append(threading.Thread(target=ticker.run, args=(stop,), name="memos-ticker"))
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def private_paths(settings: ServerSettings) -> dict[str, str]:
    """The server's own folders, each with what an error shows a client in its place."""
    named = {
        tempfile.gettempdir(): "<tmp>",
        str(Path.home()): "~",
        sysconfig.get_paths()["purelib"]: "<site-packages>",
        sys.prefix: "<python>",
    }
    if settings.store.startswith(SQLITE_SCHEME):
        named[settings.store.removeprefix(SQLITE_SCHEME)] = "<data-dir>"
    for path, label in (
        (settings.snapshot_dir, "<snapshots>"),
        (settings.model, "<model>"),
        (settings.model_cache, "<model-cache>"),
    ):
        if path is not None:
            named[str(Path(path).expanduser().resolve())] = label
            named[str(path)] = label
    return {path: label for path, label in named.items() if len(path) > 1}


def server_limits(settings: ServerSettings, base: Limits) -> Limits:
    """``base`` with the server's limits on text length, k, generated tokens and batches."""
    return dataclasses.replace(
        base,
        max_text_chars=settings.max_text_chars,
        max_k=settings.max_k,
        max_new_tokens=settings.max_new_tokens,
        max_batch=settings.max_batch,
    )


def open_memos(settings: ServerSettings) -> MemOS:
    """The SDK over the settings' store, with the server's input limits, chatting through the
    settings' upstream model when they name one (else the local model)."""
    embedder = None if settings.embedder is None else make_embedder(settings.embedder)
    upstream = upstream_model(settings)
    return MemOS(
        open_store(settings.store),
        snapshot_dir=settings.snapshot_dir,
        embedder=embedder,
        limits=server_limits(settings, Limits()),
        model=settings.model if upstream is None else upstream,
        model_cache=settings.model_cache,
    )


def upstream_model(settings: ServerSettings) -> OpenAICompatible | None:
    """The OpenAI-compatible model ``llm_url`` and ``llm_model`` name, if they do."""
    key = None if settings.llm_api_key is None else settings.llm_api_key.get_secret_value()
    return configured_upstream(
        settings.llm_url, settings.llm_model, api_key=key, local_model=settings.model
    )


def _add_health_and_metrics(app: FastAPI) -> Histogram:
    """``/healthz`` and ``/metrics``; returns the latency histogram for the ``Timing``
    middleware to fill."""
    latency = Histogram(
        "memos_request_seconds",
        "Request latency by method, route template and status",
        ("method", "route", "status"),
        buckets=LATENCY_BUCKETS,
        registry=None,  # each scrape registers it beside the caller's own gauges
    )

    @app.get("/healthz", tags=["server"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/metrics",
        tags=["server"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **_errors.documented(401, 500)},
    )
    def metrics(mos: Caller) -> Response:
        """The server's request latency (by route template and status: no names or ids), and
        items per tier and unfinished jobs over the cubes the caller may read."""
        return Response(_scrape(mos, latency), media_type=CONTENT_TYPE_LATEST)

    return latency


def _scrape(mos: MemOS, latency: Histogram) -> bytes:
    registry = CollectorRegistry()
    registry.register(latency)
    items = Gauge(
        "memos_items", "Memories and derived entries per tier", ("tier",), registry=registry
    )
    queue = Gauge(
        "memos_queue_depth",
        "Background jobs not finished yet, by state",
        ("state",),
        registry=registry,
    )
    for tier, count in tier_counts(mos).items():
        items.labels(tier).set(count)
    for state, count in queue_depth(mos).items():
        queue.labels(state.value).set(count)
    return generate_latest(registry)


def tier_counts(mos: MemOS) -> dict[str, int]:
    """Active memories (plaintext), standing KV caches (activation) and current adapter
    versions (parametric) over the cubes ``mos`` may read."""
    counts = dict.fromkeys(("plaintext", "activation", "parametric"), 0)
    for info in mos.list_cubes():
        counts["plaintext"] += len(mos.store.filter_item_ids(info.name, ItemFilter()))
        for entry in mos.store.derived_entries(info.name):
            tier = "activation" if entry.kind == KV_KIND else "parametric"
            counts[tier] += not entry.stale
    return counts


def queue_depth(mos: MemOS) -> dict[JobState, int]:
    """Queued and running jobs over the cubes ``mos`` may read."""
    counts = dict.fromkeys(UNFINISHED, 0)
    for job in mos.jobs.list():
        if job.state in counts:
            counts[job.state] += 1
    return counts
