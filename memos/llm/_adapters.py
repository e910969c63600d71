"""LoRA adapters loaded onto one base model through ``peft``, switched per forward pass.

The first adapter wraps the base model in place (peft injects LoRA layers into its linear
modules); later ones are added beside it, so switching is setting which one is active (no
reload of the base model). A forward pass with no adapter runs inside ``disable_adapter``, which
gives exactly the base model's output: KV caches and fingerprints stay those of the base model.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from memos.errors import InvalidInput, NotFound


class AdapterSlots:
    """The adapters of one base model, by name."""

    def __init__(self, model: Any) -> None:
        self._base = model
        self._peft: Any = None
        self._names: set[str] = set()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._names)

    def add(
        self, name: str, config: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None
    ) -> None:
        """Add adapter ``name`` (a LoRA config as a dict) with ``weights`` (peft's state dict
        keys, adapter name left out), or freshly initialised when ``weights`` is None."""
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        if name in self._names:
            raise InvalidInput(f"an adapter named {name!r} is loaded already")
        lora = LoraConfig(**dict(config))
        if self._peft is None:
            with warnings.catch_warnings():
                # peft 0.21 asks transformers 5 a deprecated question; nothing for us to change
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
                self._peft = get_peft_model(self._base, lora, adapter_name=name)
        else:
            self._peft.add_adapter(name, lora)
        self._names.add(name)
        if weights is not None:
            result: Any = set_peft_model_state_dict(self._peft, dict(weights), adapter_name=name)
            unexpected = [k for k in result.unexpected_keys if "lora_" in k]
            if unexpected:
                self.remove(name)
                raise InvalidInput(
                    f"adapter {name!r} has weights the model lacks: {unexpected[:3]}"
                )
        self._base.eval()

    def remove(self, name: str) -> None:
        if name not in self._names:
            raise NotFound(f"no adapter named {name!r} is loaded")
        with warnings.catch_warnings():
            # peft warns when the active adapter goes; which one is active is set per pass
            warnings.filterwarnings("ignore", r"Adapter .* was active which is now deleted")
            self._peft.delete_adapter(name)
        self._names.discard(name)
        if not self._names:
            # peft keeps no usable state with no adapter left: put the plain layers back
            self._peft.unload()
            self._peft = None
        elif self._peft.active_adapter not in self._names:
            self._peft.set_adapter(sorted(self._names)[0])

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """The adapter's trained tensors, keyed as peft saves them."""
        from peft import get_peft_model_state_dict

        if name not in self._names:
            raise NotFound(f"no adapter named {name!r} is loaded")
        state = get_peft_model_state_dict(self._peft, adapter_name=name)
        return {key: tensor.detach().clone() for key, tensor in state.items()}

    @contextmanager
    def active(self, name: str | None) -> Iterator[Any]:
        """The module to run a forward pass with: the base model with ``name`` active, or
        exactly the base model when ``name`` is None."""
        if name is None:
            if self._peft is None:
                yield self._base
            else:
                with self._peft.disable_adapter():
                    yield self._base
            return
        if name not in self._names:
            raise NotFound(f"no adapter named {name!r} is loaded")
        self._peft.set_adapter(name)
        yield self._base

    @contextmanager
    def training(self, name: str, config: Mapping[str, Any]) -> Iterator[Any]:
        """A fresh adapter ``name``, active and the only trainable parameters, in train mode;
        back in eval mode after. The caller reads its ``weights`` and ``remove``s it."""
        self.add(name, config, None)
        self._peft.set_adapter(name)
        self._peft.train()
        try:
            yield self._peft
        finally:
            self._peft.eval()
