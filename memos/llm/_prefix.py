"""A KV prefix held in RAM that any number of generations start from without copying it.

A stored memory block's keys and values are loaded once into per-layer buffers with room
after them. A generation appends its own tokens into that room and attends to a view of the
buffer: the prefix positions ``[0, P)`` are never written, so the prefix stays exactly what
was loaded (invariant 6) while no request pays for a copy of it. The room is reused by the
next generation. One generation at a time owns the room; one that starts while it is taken
(another thread, or a second stream opened before the first finished) gets a private copy
of the prefix instead of waiting, so streams never block each other.

Caches built separately are never concatenated: a prefix is always the cache of one token
sequence computed from position 0, so its rotary positions are those of the prompt.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

KV = tuple[torch.Tensor, torch.Tensor]
# room added whenever a generation needs more than the buffers hold
_ROOM_STEP = 256


class ResidentPrefix:
    """The KV cache of ``token_ids`` (one ``(keys, values)`` per layer, ``[1, H, P, D]``)."""

    def __init__(self, token_ids: Sequence[int], layers: Sequence[KV]) -> None:
        if not layers:
            raise ValueError("a prefix needs at least one layer")
        self.token_ids = tuple(int(t) for t in token_ids)
        self.length = len(self.token_ids)
        for keys, values in layers:
            if keys.shape[-2] != self.length or values.shape[-2] != self.length:
                raise ValueError("every layer must hold one position per prefix token")
        self._buffers: list[KV] = [(k.contiguous(), v.contiguous()) for k, v in layers]
        self._capacity = self.length
        self._lock = threading.Lock()

    @property
    def layers(self) -> list[KV]:
        """Read-only views of the prefix positions (for checking; never write into them)."""
        return [(k[:, :, : self.length], v[:, :, : self.length]) for k, v in self._buffers]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self._buffers)

    def digest(self) -> str:
        """sha256 of the prefix positions' bytes: unchanged by any number of generations."""
        digest = hashlib.sha256()
        for keys, values in self.layers:
            digest.update(keys.contiguous().numpy().tobytes())
            digest.update(values.contiguous().numpy().tobytes())
        return digest.hexdigest()

    def head(self, length: int) -> ResidentPrefix:
        """The cache of this prefix's first ``length`` tokens (a copy): a causal model's cache
        of a prefix of the tokens is the prefix of their cache."""
        if not 0 < length <= self.length:
            raise ValueError(f"a head of {length} tokens of a {self.length}-token prefix")
        return ResidentPrefix(
            self.token_ids[:length], [(k[:, :, :length], v[:, :, :length]) for k, v in self.layers]
        )

    @contextmanager
    def session(self, extra_tokens: int) -> Iterator[Cache]:
        """A cache that starts as this prefix and takes up to ``extra_tokens`` more."""
        if not self._lock.acquire(blocking=False):
            yield self._private(extra_tokens)
            return
        try:
            self._reserve(self.length + extra_tokens)
            layers = [_PrefixLayer(k, v, self.length) for k, v in self._buffers]
            yield Cache(layers=list(layers))
        finally:
            self._lock.release()

    def _private(self, extra_tokens: int) -> Cache:
        layers = []
        for keys, values in self.layers:
            shape = (*keys.shape[:2], self.length + extra_tokens, keys.shape[-1])
            own_keys = torch.empty(shape, dtype=keys.dtype)
            own_values = torch.empty(shape, dtype=values.dtype)
            own_keys[:, :, : self.length] = keys
            own_values[:, :, : self.length] = values
            layers.append(_PrefixLayer(own_keys, own_values, self.length))
        return Cache(layers=list(layers))

    def _reserve(self, capacity: int) -> None:
        if capacity <= self._capacity:
            return
        capacity = max(capacity, self._capacity + _ROOM_STEP)
        grown = []
        for keys, values in self._buffers:
            shape = (*keys.shape[:2], capacity, keys.shape[-1])
            new_keys = torch.empty(shape, dtype=keys.dtype)
            new_values = torch.empty(shape, dtype=values.dtype)
            new_keys[:, :, : self.length] = keys[:, :, : self.length]
            new_values[:, :, : self.length] = values[:, :, : self.length]
            grown.append((new_keys, new_values))
        self._buffers = grown
        self._capacity = capacity


class _PrefixLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """One layer of a session: new positions are written after the prefix, in place."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._key_buffer = keys
        self._value_buffer = values
        self._length = length
        self.keys = keys[:, :, :length]
        self.values = values[:, :, :length]
        self.device = keys.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[-2]
        if end > self._key_buffer.shape[-2]:
            raise RuntimeError("a generation outgrew the room reserved after its prefix")
        self._key_buffer[:, :, self._length : end] = key_states
        self._value_buffer[:, :, self._length : end] = value_states
        self._length = end
        self.keys = self._key_buffer[:, :, :end]
        self.values = self._value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length

    def crop(self, tokens_to_remove: int) -> None:
        raise RuntimeError("a prefix session cannot be cropped")
