"""all-MiniLM-L6-v2 through sentence-transformers and torch, for large batches: once loaded,
torch's kernels embed bulk text faster than the numpy encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from memos.errors import MemosError


def load_sentence_transformer(folder: Path, max_seq_length: int) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise MemosError(f"sentence-transformers is not installed: {exc}") from exc
    # Loading a 90 MB model from local disk needs no progress bar on the user's terminal.
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    finally:
        if bar_was_enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    model.max_seq_length = max_seq_length
    model.eval()  # once: the forward passes below never train
    return model


def forward(model: Any, batch: list[str]) -> NDArray[np.float32]:
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
