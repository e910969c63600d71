"""The ``MemOS`` facade: the SDK's one entry point over a store, embedders and indexes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memos.core._store import Store, open_store
from memos.core._types import CubeInfo, Refusal, utcnow
from memos.core._validation import Limits
from memos.embedding import Embedder
from memos.engine._engine import Engine
from memos.engine._handle import Handle
from memos.engine._keys import Keys
from memos.engine._kv import EmbeddedKV
from memos.engine._lora import EmbeddedLora
from memos.engine._operations import Operation, Performs, namespace
from memos.engine._scope import Scope
from memos.errors import PolicyRefused

if TYPE_CHECKING:
    from memos.engine._remote import RemoteMemOS
    from memos.llm import LLMBackend, TextChatModel


_RETRIES = 20
_EMBED_CHUNK = 4096
Progress = Callable[[int], None]


class MemOS(Handle):
    """Memory for LLM applications: cubes of memories with an audited, reversible history.

    Open an embedded data directory with :meth:`open`. Every mutation appends one event to the
    cube's hash-chained log in the same transaction that changes the item.
    """

    kv = namespace(EmbeddedKV)
    lora = namespace(EmbeddedLora)
    keys = namespace(Keys)
    """The server's API keys: ``create``, ``list``, ``revoke`` (see
    :class:`memos.engine._keys.Keys`)."""

    def __init__(
        self,
        store: Store,
        *,
        snapshot_dir: Path | None = None,
        embedder: Embedder | None = None,
        limits: Limits | None = None,
        model: LLMBackend | TextChatModel | str | Path | None = None,
        model_cache: Path | None = None,
    ) -> None:
        engine = Engine(
            store, limits=limits or Limits(), snapshot_dir=snapshot_dir, embedder=embedder,
            model=model, model_cache=model_cache,
        )  # fmt: skip
        self._engine, self._scope = engine, engine.operator

    def _perform_on(
        self, target: Performs, op: Operation, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Perform ``op`` here; a change a cube policy refuses is kept in the store's refusal
        log (no event is written for it) before the error goes on to the caller."""
        try:
            return super()._perform_on(target, op, args, kwargs)
        except PolicyRefused as refused:
            cube = refused.details.get("cube")
            if isinstance(cube, str) and not getattr(refused, "recorded", False):
                refused.recorded = True  # type: ignore[attr-defined]  # once, by the outermost
                refusal = Refusal(ts=utcnow(), actor=self._scope.actor(None),
                                  code=refused.code, message=refused.message)  # fmt: skip
                self._engine.store.record_refusal(cube, refusal)
            raise

    @classmethod
    def _over(cls, engine: Engine, scope: Scope) -> MemOS:
        """A handle over ``engine`` that acts under ``scope``."""
        handle = cls.__new__(cls)
        handle._engine, handle._scope = engine, scope
        return handle

    @classmethod
    def open(
        cls,
        path: str | Path = ".memos",
        *,
        create: bool = True,
        embedder: Embedder | None = None,
        limits: Limits | None = None,
        model: LLMBackend | TextChatModel | str | Path | None = None,
        model_cache: Path | None = None,
    ) -> MemOS:
        """Open (or create) an embedded data directory: SQLite, index snapshots, blobs.

        ``model`` (for chat and KV caches) is a loaded backend, a local Hugging Face model
        directory or ``.gguf`` file, or ``None`` for the bundled SmolLM2-135M-Instruct; a GGUF
        is converted once into ``model_cache`` (default ``~/.cache/memos/models``). An upstream
        model (:class:`memos.llm.OpenAICompatible`) serves chat only: KV blocks and adapters
        are then refused with :class:`memos.errors.UnsupportedByModel`."""
        data_dir = Path(path).expanduser().resolve()
        store = open_store(f"sqlite:///{data_dir}", create=create)
        return cls(
            store,
            snapshot_dir=data_dir / "index",
            embedder=embedder,
            limits=limits,
            model=model,
            model_cache=model_cache,
        )

    @classmethod
    def connect(cls, url: str, *, api_key: str, timeout: float = 600.0) -> RemoteMemOS:
        """A client of a MemOS server with the same methods as an embedded MemOS.

        It acts as the principal of ``api_key`` (made by ``memos keys create``); ``timeout``
        is how long to wait for an answer, in seconds (chat and consolidation are slow)."""
        from memos.engine._remote import RemoteMemOS

        return RemoteMemOS(url, api_key=api_key, timeout=timeout)

    def as_principal(self, principal: str, *, limits: Limits | None = None) -> MemOS:
        """A handle over the same store, indexes and model that acts as ``principal``: it sees
        only the cubes the principal owns or was granted, and the log names the principal for
        everything it does (see :mod:`memos.engine._scope`). ``limits`` (a server's) replace the
        handle's input limits. Closing it closes nothing."""
        scope = Scope(self.store, principal, limits or self.limits)
        return type(self)._over(self._engine, scope)

    @property
    def principal(self) -> str | None:
        """Whom this handle acts as; ``None`` for the operator of an embedded data directory."""
        return self._scope.principal

    @property
    def store(self) -> Store:
        return self._engine.store

    @property
    def limits(self) -> Limits:
        return self._scope.limits

    def close(self) -> None:
        """Close the store (the operator's handle; a principal's closes nothing)."""
        if self._scope.principal is None:
            self._engine.close()

    # cubes ------------------------------------------------------------------------------

    def _after_write(self, info: CubeInfo, actor: str, *, grew: bool = True) -> None:
        self._engine.after_write(info, actor, self.limits, grew=grew)

    # chat and activation memory ---------------------------------------------------------

    def model(self) -> LLMBackend:
        """The language model chat and KV caches use, loaded on first call."""
        return self._engine.model()
