"""Plain value types shared by model backends."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """What a KV cache of this model holds per token: ``layers × 2 × kv_heads × head_dim``."""

    layers: int
    kv_heads: int
    head_dim: int
    max_positions: int


@dataclass(frozen=True)
class SplitPrompt:
    """A chat prompt as token ids: ``prefix`` (the system message up to where a cached memory
    block ends) and ``rest`` (the rest of the system message, the user's turn and the assistant
    header). ``ids`` is what the model reads."""

    prefix: tuple[int, ...]
    rest: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prefix + self.rest
