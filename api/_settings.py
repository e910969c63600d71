"""The server's settings, read once by ``memos serve`` (or a caller) and passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ServerSettings(BaseModel):
    """What a server process needs: where its memory lives and the limits it enforces.

    ``store`` is a store URL (``sqlite:///dir`` or ``redis://host:port/db?prefix=...``).
    ``snapshot_dir`` keeps FAISS index snapshots between restarts (embedded store only).
    ``llm_url`` and ``llm_model`` name an OpenAI-compatible upstream model that chat goes
    through instead of a local one (the server is then a memory proxy in front of it; KV blocks
    and adapters are refused), with ``llm_api_key`` as its bearer key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    store: str
    snapshot_dir: Path | None = None
    model: str | None = None  # a local model directory or .gguf; None: the bundled SmolLM2
    model_cache: Path | None = None
    llm_url: str | None = None  # an OpenAI-compatible API, e.g. http://localhost:11434/v1
    llm_model: str | None = None  # the model to ask there
    llm_api_key: SecretStr | None = None  # its key (from MEMOS_LLM_API_KEY); never shown
    embedder: str | None = None  # the default embedder of new cubes (a registered name)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # an import (a tar of a cube's or an adapter's export) may be larger than other requests
    max_import_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_text_chars: int = Field(default=16_000, ge=1)
    max_batch: int = Field(default=1_000, ge=1)
    max_k: int = Field(default=100, ge=1)
    max_new_tokens: int = Field(default=512, ge=1)
    faiss_threads: int = Field(default=1, ge=1, le=256)
    # job workers in the server process (0: jobs wait for `memos worker` processes)
    workers: int = Field(default=0, ge=0, le=64)
    worker_lease_s: float = Field(default=60.0, gt=0)
    # seconds between the scheduler's ticks, which queue its migrations as jobs (0: none)
    tick_interval_s: float = Field(default=60.0, ge=0)
