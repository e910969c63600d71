"""The engine: what every handle of one process shares.

One :class:`Engine` per opened store holds the store, the cubes' vector indexes, the embedders,
the language model (loaded on first use), the search thread and the KV and adapter catalogs. A
:class:`memos.MemOS` handle is an engine and a :class:`memos.engine._scope.Scope` (whom it acts as);
``mos.as_principal`` makes another handle over the same engine, so nothing is copied and every
handle sees the same loaded state.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from memos.core import _validation as check
from memos.core._store import Store
from memos.core._types import CubeInfo, EventOp, MemoryItem, MetadataValue, SearchHit, utcnow
from memos.core._validation import Limits
from memos.embedding import Embedder, make_embedder
from memos.embedding._protocol import MINILM as DEFAULT_EMBEDDER
from memos.engine._scope import Scope
from memos.engine._uses import UseRecorder
from memos.errors import InvalidInput, UnsupportedByModel, VersionConflict
from memos.llm._backend import TextChatModel
from memos.plaintext import _search

if TYPE_CHECKING:
    from memos.activation import KVMemory
    from memos.llm import LLMBackend, LocalModel
    from memos.parametric import LoraMemory
    from memos.plaintext._indexes import CubeIndexes

DEFAULT_MODEL_CACHE = Path("~/.cache/memos/models")


class Engine:
    """The shared state of the handles over one store; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        limits: Limits,
        snapshot_dir: Path | None = None,
        embedder: Embedder | None = None,
        model: LLMBackend | TextChatModel | str | Path | None = None,
        model_cache: Path | None = None,
    ) -> None:
        self.store = store
        # the vector indexes (and numpy, FAISS and the codecs with them) load on first use: a
        # command that only reads the log or the catalogs never needs them
        self._snapshot_dir = snapshot_dir
        self._indexes: CubeIndexes | None = None
        self._indexes_lock = threading.Lock()
        # the operator's access rules: what the catalogs' own retrieval runs under, once the
        # handle that asked has been checked against the cube
        self.operator = Scope(store, None, limits)
        # one worker for retrieval that overlaps the query embedding (hybrid search)
        self.aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memos-search")
        # what searches and chats retrieved, written to the store in batches
        self.uses = UseRecorder(store)
        self._default_embedder = embedder
        self._embedders: dict[str, Embedder] = {} if embedder is None else {embedder.name: embedder}
        # the language model is loaded on first use (chat, KV caches): a path, or None for the
        # bundled SmolLM2, converted once into model_cache; or a loaded one, local or upstream
        self._model: LLMBackend | TextChatModel | None = (
            None if isinstance(model, str | Path | None) else model
        )
        self._model_source = model if isinstance(model, str | Path) else None
        self._model_cache = (model_cache or DEFAULT_MODEL_CACHE).expanduser()
        self._lock = threading.Lock()
        self._kv: KVMemory | None = None
        self._lora: LoraMemory | None = None
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.aside.shutdown(wait=True)
        self.uses.flush()
        if self._indexes is not None:  # nothing to save where no index was ever loaded
            self._indexes.save_all()
        self.store.close()

    # embedders --------------------------------------------------------------------------

    def default_embedder_name(self) -> str:
        return self._default_embedder.name if self._default_embedder else DEFAULT_EMBEDDER

    def embedder_named(self, name: str) -> Embedder:
        if name not in self._embedders:
            model = make_embedder(name)
            self._embedders[name] = self._embedders.setdefault(model.name, model)
        return self._embedders[name]

    def embedder_for(self, info: CubeInfo) -> Embedder:
        model = self.embedder_named(info.embedder)
        if model.dim != info.dim:
            raise InvalidInput(
                f"cube {info.name!r} holds {info.dim}-d vectors but embedder "
                f"{model.name!r} makes {model.dim}-d ones"
            )
        return model

    # search -----------------------------------------------------------------------------

    def search(
        self,
        scope: Scope,
        query: str,
        *,
        cube: str,
        k: int,
        user: str | None = None,
        tags: Iterable[str] | None = None,
        session: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        where: Mapping[str, MetadataValue] | None = None,
        mode: str = _search.DEFAULT_MODE,
        count_use: bool = True,
    ) -> list[SearchHit]:
        """:meth:`memos.MemOS.search` for ``scope``; the hits are one use of their memories
        (see :mod:`memos.engine._uses`) unless ``count_use`` is false (a chat counts the
        memories of its prompt itself)."""
        limits = scope.limits
        query = check.text(query, limits)
        k = check.positive(k, "k", limits.max_k)
        flt = _search.item_filter(
            limits, user=user, tags=tags, session=session, since=since, until=until, where=where
        )
        search_mode = _search.search_mode(mode)
        info = scope.cube(cube)

        def dense(n: int, allowed: Collection[str] | None) -> list[tuple[str, float]]:
            vector = self.embedder_for(info).embed([query])[0]
            index = self.indexes.current(info)
            exact = functools.partial(self.store.get_vectors, cube=info.name)
            return index.search(vector, n, allowed, exact=exact)

        hits = _search.search(
            self.store, info.name, query, k=k, flt=flt, mode=search_mode, dense=dense,
            aside=self.aside,
        )  # fmt: skip
        if count_use:
            self.uses.add(info.name, [hit.item.id for hit in hits], utcnow())
        return hits

    def retrieve(self, query: str, cube: str, k: int, user: str | None) -> list[MemoryItem]:
        """The memories a catalog puts in a block or trains on, from a cube already checked
        (not a use: building is the scheduler's or an operator's doing, not a reader's)."""
        hits = self.search(self.operator, query, cube=cube, k=k, user=user, count_use=False)
        return [hit.item for hit in hits]

    @property
    def indexes(self) -> CubeIndexes:
        """The cubes' vector indexes, made on first use (every search and write reads this:
        the lock is taken only until they exist)."""
        if self._indexes is None:
            with self._indexes_lock:
                if self._indexes is None:
                    from memos.plaintext._indexes import CubeIndexes

                    self._indexes = CubeIndexes(self.store, self._snapshot_dir)
        return self._indexes

    # after a write ----------------------------------------------------------------------

    def after_write(self, info: CubeInfo, actor: str, limits: Limits, *, grew: bool) -> None:
        """Catch the cube's index up with a write; when the write may have grown the cube,
        fit its codec on first reaching ``fit_min`` active memories, or partition the index
        past ``limits.partition_items`` (see :mod:`memos.plaintext._partition`)."""
        from memos.codecs import make_codec
        from memos.plaintext._partition import SCHEDULER_ACTOR, due_repartition

        items = len(self.indexes.current(info))
        if not grew:
            return
        change = due_repartition(info, items, limits.partition_items)
        if change is not None:
            self.reconfigure_unless_raced(
                info, change.codec, change.op, SCHEDULER_ACTOR, change.reason
            )
            return
        if info.codec_state is not None:
            return
        fit_min = make_codec(info.codec).fit_min
        if fit_min and items >= fit_min:
            reason = f"the cube reached {fit_min} memories"
            self.reconfigure_unless_raced(info, info.codec, EventOp.CODEC_FIT, actor, reason)

    def reconfigure_unless_raced(
        self, info: CubeInfo, codec: str, op: EventOp, actor: str, reason: str
    ) -> None:
        # a VersionConflict means another writer changed the configuration first; theirs stands
        from memos.plaintext._encoding import reconfigure

        with contextlib.suppress(VersionConflict):
            reconfigure(
                self.store, self.indexes, info, codec=codec, op=op, actor=actor, reason=reason
            )

    # the model and its tiers ------------------------------------------------------------

    @property
    def loaded_model(self) -> LLMBackend | None:
        """The local language model if something has loaded it already (nothing is loaded
        here); ``None`` with an upstream model too."""
        return None if isinstance(self._model, TextChatModel) else self._model

    @property
    def loaded_kv(self) -> KVMemory | None:
        """The KV catalog if something has made it already (nothing is made here)."""
        return self._kv

    @property
    def local_tiers(self) -> bool:
        """Whether KV blocks and adapters can be made here: not when chat goes through an
        upstream model (nothing is loaded to tell)."""
        return not isinstance(self._model, TextChatModel)

    def chat_model(self) -> LLMBackend | TextChatModel:
        """The language model chat answers with: the local one (loaded on first call), or
        the upstream one it was given."""
        with self._lock:
            if self._model is None:
                from memos.llm import LocalModel

                self._model = LocalModel.load(self._model_source, cache_dir=self._model_cache)
            return self._model

    def model(self) -> LLMBackend:
        """The local language model KV caches (and chat) use, loaded on first call; refused
        (:class:`UnsupportedByModel`) when chat goes through an upstream model."""
        model = self.chat_model()
        if isinstance(model, TextChatModel):
            raise UnsupportedByModel(
                f"KV blocks and LoRA adapters need a local model whose weights run here; this "
                f"server chats through the upstream model {model.name!r}",
                model=model.name,
            )
        return model

    def local_model(self) -> LocalModel:
        from memos.llm import LocalModel

        model = self.model()
        if not isinstance(model, LocalModel):
            raise UnsupportedByModel("LoRA adapters need a local model whose weights run here")
        return model

    def kv(self) -> KVMemory:
        """The KV catalog, under the operator's rules; a handle uses it ``scoped`` to its own."""
        if self._kv is None:
            from memos.activation import KVMemory

            kv = KVMemory(
                self.store, model=self.model, cube_info=self.operator.cube,
                retrieve=self.retrieve, actor=self.operator.actor, limits=self.operator.limits,
            )  # fmt: skip
            with self._lock:
                self._kv = self._kv or kv
        return self._kv

    def lora(self) -> LoraMemory:
        """The adapter catalog, under the operator's rules (see :meth:`kv`)."""
        if self._lora is None:
            from memos.parametric import LoraMemory

            lora = LoraMemory(
                self.store, model=self.local_model, cube_info=self.operator.cube,
                retrieve=self.retrieve, actor=self.operator.actor, limits=self.operator.limits,
            )  # fmt: skip
            with self._lock:
                self._lora = self._lora or lora
        return self._lora
