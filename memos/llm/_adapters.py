"""LoRA adapters loaded onto one base model through ``peft``, switched per forward pass.

The first adapter wraps the base model in place (peft injects LoRA layers into its linear
modules); later ones are added beside it, so switching is setting which one is active (no
reload of the base model). A forward pass with no adapter runs with every LoRA layer disabled,
which gives exactly the base model's output: KV caches and fingerprints stay those of the base
model.

For inference a switch sets only the two flags each LoRA layer's forward reads (which adapter is
active, whether adapters are disabled). peft's own ``set_adapter`` and ``disable_adapter`` also
flip ``requires_grad`` on every adapter parameter, which costs SmolLM2's 210 LoRA layers about
20 ms a call and matters only to training, which goes through peft.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from memos.errors import InvalidInput, NotFound

_UNKNOWN = object()


class AdapterSlots:
    """The adapters of one base model, by name."""

    def __init__(self, model: Any, lock: threading.RLock) -> None:
        self._base = model
        # the model's pass lock: every change to the layers waits for the pass in flight
        self._lock = lock
        # adapters that serve chats, least recently asked for first, and how many streams are
        # generating through each now (an adapter in use is never evicted)
        self._served: OrderedDict[str, None] = OrderedDict()
        self._held: Counter[str] = Counter()
        self._peft: Any = None
        self._names: set[str] = set()
        self._layers: list[Any] | None = None  # the LoRA layers, found once per wrapping
        self._pointed: str | object | None = _UNKNOWN  # what the layers run now

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._names)

    def add(
        self, name: str, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None
    ) -> None:
        """Add adapter ``name`` (a LoRA config as a dict) with ``weights`` (peft's state dict
        keys, adapter name left out), or freshly initialised when ``weights`` is None."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        with self._lock:
            if name in self._names:
                raise InvalidInput(f"an adapter named {name!r} is loaded already")
            lora = LoraConfig(**dict(config))
            self._forget_layers()
            if self._peft is None:
                with warnings.catch_warnings():
                    # peft 0.21 asks transformers 5 a deprecated question; nothing to change
                    warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
                    self._peft = get_peft_model(self._base, lora, adapter_name=name)
            else:
                self._peft.add_adapter(name, lora)
            self._names.add(name)
            if weights is not None:
                state = dict(weights)
                result: Any = set_peft_model_state_dict(self._peft, state, adapter_name=name)
                unexpected = [k for k in result.unexpected_keys if "lora_" in k]
                if unexpected:
                    self.remove(name)
                    raise InvalidInput(
                        f"adapter {name!r} has weights the model lacks: {unexpected[:3]}"
                    )
            self._base.eval()

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._names:
                raise NotFound(f"no adapter named {name!r} is loaded")
            self._forget_layers()
            with warnings.catch_warnings():
                # peft warns when the active adapter goes; which one is active is set per pass
                warnings.filterwarnings("ignore", r"Adapter .* was active which is now deleted")
                self._peft.delete_adapter(name)
            self._names.discard(name)
            self._served.pop(name, None)
            if not self._names:
                # peft keeps no usable state with no adapter left: put the plain layers back
                self._peft.unload()
                self._peft = None
            elif self._peft.active_adapter not in self._names:
                self._peft.set_adapter(sorted(self._names)[0])

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """The adapter's trained tensors, keyed as peft saves them."""
        from peft import get_peft_model_state_dict

        with self._lock:
            if name not in self._names:
                raise NotFound(f"no adapter named {name!r} is loaded")
            state = get_peft_model_state_dict(self._peft, adapter_name=name)
            return {key: tensor.detach().clone() for key, tensor in state.items()}

    def touch(self, name: str) -> None:
        """Count ``name`` as the adapter asked for most recently (see :meth:`evict`)."""
        with self._lock:
            if name not in self._names:
                raise NotFound(f"no adapter named {name!r} is loaded")
            self._served[name] = None
            self._served.move_to_end(name)

    def evict(self, keep: int) -> list[str]:
        """Remove the touched adapters beyond the ``keep`` asked for most recently, except
        those a stream is generating through; returns the names removed."""
        with self._lock:
            older = list(self._served)[: max(0, len(self._served) - keep)]
            gone = [name for name in older if not self._held[name]]
            for name in gone:
                self.remove(name)
            return gone

    @contextmanager
    def held(self, name: str | None) -> Iterator[None]:
        """While the block runs, adapter ``name`` is in use and is not evicted."""
        if name is None:
            yield
            return
        with self._lock:
            self._held[name] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[name] -= 1
                if not self._held[name]:
                    del self._held[name]

    @contextmanager
    def active(self, name: str | None) -> Iterator[Any]:
        """The module to run a forward pass with: the base model with ``name`` active, or
        exactly the base model when ``name`` is None."""
        if name is not None and name not in self._names:
            raise NotFound(f"no adapter named {name!r} is loaded")
        if self._peft is not None:
            self._point(name)
        yield self._base

    def _point(self, name: str | None) -> None:
        """Make every LoRA layer run adapter ``name`` (``None``: none) in inference."""
        if self._pointed == name:
            return
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layers = [m for m in self._peft.modules() if isinstance(m, BaseTunerLayer)]
        for layer in self._layers:
            layer._disable_adapters = name is None
            if name is not None:
                layer._active_adapter = name
        self._pointed = name

    def _forget_layers(self) -> None:
        """After peft changed the layers (an adapter added, removed, trained)."""
        self._layers, self._pointed = None, _UNKNOWN

    @contextmanager
    def training(self, name: str, config: Mapping[str, Any]) -> Iterator[Any]:
        """A fresh adapter ``name``, active and the only trainable parameters, in train mode;
        back in eval mode after. The caller reads its ``weights`` and ``remove``s it."""
        with self._lock:
            self.add(name, config, None)
            self._peft.set_adapter(name)
            self._peft.train()
            self._forget_layers()
        try:
            yield self._peft
        finally:
            with self._lock:
                self._peft.eval()
