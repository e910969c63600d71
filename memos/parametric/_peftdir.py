"""Adapter directories in peft's own layout, read without trusting them.

::

    adapter_config.json          the LoRA configuration (peft's LoraConfig fields)
    adapter_model.safetensors    the LoRA factors, peft's tensor names
    memos_manifest.json          (exports only) the version's manifest: base-model fingerprint,
                                 sources, recipe, metrics

Only LoRA on linear layers with safetensors weights is accepted; pickled ``adapter_model.bin``
files are refused without being opened. Tensors that are not the LoRA factors of the loaded
base model are a :class:`memos.errors.ModelMismatch`; malformed files a
:class:`memos.errors.CorruptArtifact`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load, save

from memos.errors import CorruptArtifact, InvalidInput, ModelMismatch, StorageError
from memos.llm import LocalModel
from memos.parametric._manifest import AdapterManifest, LoraSettings
from memos.parametric._weights import Weights, check_fits, expected_shapes

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MANIFEST_FILE = "memos_manifest.json"
_MAX_BYTES = 2**31
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def read_adapter_dir(
    directory: Path, model: LocalModel
) -> tuple[LoraSettings, Weights, AdapterManifest | None]:
    check_adapter_dir(directory)
    lora = _settings(_json_file(directory / CONFIG_FILE, required=True))
    exported = _manifest(directory)
    weights = _weights(directory / WEIGHTS_FILE)
    shapes = expected_shapes(model.model, lora)
    found = {name: tuple(t.shape) for name, t in weights.items()}
    if found != shapes:
        raise ModelMismatch(
            f"the adapter's tensors are not the LoRA factors of {model.name} "
            f"(r={lora.r} on {', '.join(lora.target_modules)})"
        )
    check_fits(weights, shapes, sum(t.numel() for t in weights.values()))
    return lora, weights, exported


def check_adapter_dir(directory: Path) -> None:
    """Refuse (:class:`InvalidInput`) what is not an adapter directory with safetensors
    weights, before anything in it is opened."""
    if not directory.is_dir():
        raise InvalidInput(f"{directory} is not an adapter directory")
    if not (directory / WEIGHTS_FILE).is_file():
        if (directory / "adapter_model.bin").exists():
            raise InvalidInput("pickled adapter_model.bin weights are refused; use safetensors")
        raise InvalidInput(f"{directory} has no {WEIGHTS_FILE}")


def write_adapter_dir(directory: Path, manifest: AdapterManifest, weights: Weights) -> Path:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidInput(f"export directory {directory} exists and is not empty")
    config = manifest.lora.peft_kwargs() | {
        "peft_type": "LORA",
        "base_model_name_or_path": manifest.base_model_name,
    }
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (directory / WEIGHTS_FILE).write_bytes(save(weights, metadata={"format": "pt"}))
        (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot write the adapter to {directory}: {exc}") from exc
    return directory


def _settings(config: dict[str, Any]) -> LoraSettings:
    if config.get("peft_type", "LORA") != "LORA" or config.get("bias", "none") != "none":
        raise CorruptArtifact("only LoRA adapters without bias terms are accepted")
    for unsupported in ("use_dora", "use_rslora", "modules_to_save", "layers_to_transform"):
        if config.get(unsupported):
            raise CorruptArtifact(f"adapters with {unsupported} are not supported")
    targets = config.get("target_modules")
    alpha = config.get("lora_alpha")
    try:
        return LoraSettings(
            r=config.get("r"),  # type: ignore[arg-type]
            lora_alpha=int(alpha) if isinstance(alpha, float) and alpha.is_integer() else alpha,  # type: ignore[arg-type]
            # peft writes a set of names, in no fixed order
            target_modules=tuple(sorted(targets)) if isinstance(targets, list) else targets,  # type: ignore[arg-type]
            lora_dropout=float(config.get("lora_dropout") or 0.0),
        )
    except (ValidationError, TypeError, ValueError, OverflowError) as exc:
        # OverflowError: a dropout written as an integer too large for a float
        raise CorruptArtifact(f"{CONFIG_FILE} is not a usable LoRA configuration: {exc}") from exc


def _manifest(directory: Path) -> AdapterManifest | None:
    data = _json_file(directory / MANIFEST_FILE, required=False)
    if data is None:
        return None
    try:
        return AdapterManifest.model_validate_json(json.dumps(data))
    except ValidationError as exc:
        raise CorruptArtifact(f"{MANIFEST_FILE} is malformed: {exc}") from exc


def _json_file(path: Path, *, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise InvalidInput(f"the adapter directory has no {path.name}")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        # RecursionError: arrays nested deeper than the parser recurses
        raise CorruptArtifact(f"{path.name} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptArtifact(f"{path.name} is not a JSON object")
    return data


def _weights(path: Path) -> Weights:
    if path.stat().st_size > _MAX_BYTES:
        raise CorruptArtifact(f"{path.name} is larger than an adapter can be")
    try:
        tensors = load(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OverflowError, KeyError) as exc:
        raise CorruptArtifact(f"{path.name} is not valid safetensors: {exc}") from exc
    if any(t.dtype not in _FLOATS for t in tensors.values()):
        raise CorruptArtifact(f"{path.name} holds tensors that are not floating point")
    return {name: t.to(torch.float32) for name, t in tensors.items()}
