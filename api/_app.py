"""The app factory: one ``MemOS`` over the configured store, the routes, auth, limits and
metrics. Nothing happens at import; ``create_app`` is called by ``memos serve`` (or a test)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import faiss
from fastapi import Depends, FastAPI, Request, Response
from memos.schedulers import Worker
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)

from memos import ItemFilter, Limits, MemOS, Store, __version__, open_store
from memos._derived import KV_KIND
from memos.embedding import make_embedder

from . import _cube_routes, _errors, _job_routes, _memory_routes, _model_routes
from ._deps import principal_handle, root
from ._middleware import BodyLimit, Timing
from ._settings import ServerSettings

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


def create_app(settings: ServerSettings, mos: MemOS | None = None) -> FastAPI:
    """The server over ``mos`` (closed with the app), or over a ``MemOS`` opened from
    ``settings.store``."""
    faiss.omp_set_num_threads(settings.faiss_threads)
    mos = mos or open_memos(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        with _job_workers(mos, settings):
            yield
        mos.close()

    # the OpenAPI document is public (it describes routes, never data); no HTML docs pages
    app = FastAPI(
        title="MemOS", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.mos, app.state.settings = mos, settings
    app.state.limits = server_limits(settings, mos.limits)
    _errors.install(app)
    for module in (_cube_routes, _memory_routes, _model_routes, _job_routes):
        app.include_router(module.router)
    _add_health_and_metrics(app)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        by_path={
            "/v1/cubes/import": settings.max_import_bytes,
            _model_routes.ADAPTER_IMPORT_PATH: settings.max_import_bytes,
        },
    )
    return app


@contextmanager
def _job_workers(mos: MemOS, settings: ServerSettings) -> Iterator[None]:
    """``settings.workers`` threads running queued jobs while the block runs; each finishes
    the job in hand before the server stops."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=Worker(mos, lease_s=settings.worker_lease_s).run,
            args=(stop,),
            name=f"memos-job-worker-{n}",
        )
        for n in range(settings.workers)
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def server_limits(settings: ServerSettings, base: Limits) -> Limits:
    """``base`` with the server's limits on text length and k."""
    return dataclasses.replace(base, max_text_chars=settings.max_text_chars, max_k=settings.max_k)


def open_memos(settings: ServerSettings) -> MemOS:
    """The SDK over the settings' store, with the server's input limits."""
    embedder = None if settings.embedder is None else make_embedder(settings.embedder)
    return MemOS(
        open_store(settings.store),
        snapshot_dir=settings.snapshot_dir,
        embedder=embedder,
        limits=server_limits(settings, Limits()),
        model=settings.model,
        model_cache=settings.model_cache,
    )


def _add_health_and_metrics(app: FastAPI) -> None:
    registry = CollectorRegistry()
    latency = Histogram(
        "memos_request_seconds",
        "Request latency by method, route template and status",
        ("method", "route", "status"),
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    items = Gauge(
        "memos_items", "Memories and derived entries per tier", ("tier",), registry=registry
    )
    queue = Gauge(
        "memos_queue_depth",
        "Background jobs not finished yet, by state",
        ("state",),
        registry=registry,
    )
    app.add_middleware(Timing, histogram=latency)

    @app.get("/healthz", tags=["server"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/metrics",
        tags=["server"],
        response_class=Response,
        dependencies=[Depends(principal_handle)],
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **_errors.documented(401, 500)},
    )
    def metrics(request: Request) -> Response:
        for tier, count in tier_counts(root(request).store).items():
            items.labels(tier).set(count)
        for state, count in root(request).store.job_counts().items():
            queue.labels(state.value).set(count)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def tier_counts(store: Store) -> dict[str, int]:
    """Active memories (plaintext), standing KV caches (activation) and current adapter
    versions (parametric) over every cube of the store."""
    counts = dict.fromkeys(("plaintext", "activation", "parametric"), 0)
    for info in store.list_cubes():
        counts["plaintext"] += len(store.filter_item_ids(info.name, ItemFilter()))
        for entry in store.derived_entries(info.name):
            tier = "activation" if entry.kind == KV_KIND else "parametric"
            counts[tier] += not entry.stale
    return counts
