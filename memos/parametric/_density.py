"""How far an adapter is compressed: the density that keeps what it recalls."""

from __future__ import annotations

import builtins
import os
import time
from typing import Any

from memos.llm import LocalModel
from memos.parametric._manifest import settings_of
from memos.parametric._weights import Weights

# a compressed adapter may recall this much less (a fraction of the facts) than the raw one
RECALL_TOLERANCE = 0.05


def slot(purpose: str) -> str:
    """A name for an adapter loaded into the model for a moment, unique to this call."""
    return f"{purpose}-{os.getpid()}-{time.time_ns()}"


def density_keeping_recall(
    model: LocalModel,
    weights: Weights,
    recipe: Any,
    facts: builtins.list[str],
    density: float | None,
) -> tuple[float | None, float | None]:
    """``density`` (and the compressed adapter's recall) when compressing at it keeps
    the raw adapter's recall of the facts (within ``RECALL_TOLERANCE``), else ``None``
    (store fp32)."""
    from memos.parametric._compress import compress, decompress
    from memos.parametric._train import recall

    if density is None:
        return None, None
    recalls = []
    for candidate in (weights, decompress(compress(weights, density=density))):
        name = slot("check")
        model.adapters.add(name, settings_of(recipe).peft_kwargs(), candidate)
        try:
            recalls.append(recall(model, facts, adapter=name, recipe=recipe))
        finally:
            model.adapters.remove(name)
    raw, compressed = recalls
    return (density if compressed >= raw - RECALL_TOLERANCE else None), compressed
