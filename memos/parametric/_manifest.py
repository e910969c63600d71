"""The manifest of a stored adapter version: which base model, which LoRA, from what, how."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, field_validator

from memos.core._derived import checked_manifest
from memos.core._model import Model
from memos.core._types import DerivedEntry, SourceRef
from memos.core._validation import ADAPTER_NAME
from memos.llm import ModelFingerprint

if TYPE_CHECKING:
    from memos.llm import LocalModel
    from memos.parametric._weights import Weights

# SmolLM2 adapters lost all recall at density 0.1 and kept most of it at 0.5 (492 KB)
DEFAULT_DENSITY = 0.5

AdapterOrigin = Literal["consolidate", "import", "retrain", "rollback", "dampen"]
AdapterStorage = Literal["fp32", "compeft"]


class LoraSettings(Model):
    """The LoRA configuration an adapter was made with (what ``peft.LoraConfig`` needs)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    r: int = Field(ge=1, le=256)
    lora_alpha: int = Field(ge=1, le=4096)
    target_modules: tuple[str, ...] = Field(min_length=1, max_length=64)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("target_modules")
    @classmethod
    def _sorted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # one spelling of a set of modules: peft itself stores them as a set, in no order
        return tuple(sorted(value))

    def peft_kwargs(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "target_modules": list(self.target_modules),
            "lora_dropout": self.lora_dropout,
            "bias": "none",
            "task_type": "CAUSAL_LM",
        }


class AdapterManifest(Model):
    """Everything checked before an adapter's tensors are loaded onto a model."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    format: Literal["memos-lora"] = "memos-lora"
    format_version: Literal[1] = 1
    name: str = Field(pattern=ADAPTER_NAME)
    version: int = Field(ge=1)
    origin: AdapterOrigin
    base_model_name: str = Field(max_length=200)
    base_model: ModelFingerprint
    lora: LoraSettings
    parameters: int = Field(ge=1, le=2**31)
    storage: AdapterStorage
    density: float | None = Field(default=None, gt=0.0, le=1.0)
    sources: tuple[SourceRef, ...] = ()
    recipe: dict[str, Any] | None = None
    metrics: dict[str, float | int | bool | str] = Field(default_factory=dict)
    # the version this one restores (origin "rollback"), retrains (origin "retrain") or
    # dampens (origin "dampen")
    from_version: int | None = Field(default=None, ge=1)


def settings_of(recipe: Any) -> LoraSettings:
    """The LoRA settings a training recipe trains with."""
    config = recipe.lora_config()
    return LoraSettings(
        r=int(config["r"]),
        lora_alpha=int(config["lora_alpha"]),
        target_modules=tuple(config["target_modules"]),
        lora_dropout=float(config.get("lora_dropout", 0.0)),
    )


def new_manifest(
    model: LocalModel,
    name: str,
    origin: str,
    lora: LoraSettings,
    weights: Weights,
    density: float | None,
    sources: tuple[SourceRef, ...],
    recipe: dict[str, Any] | None,
    metrics: dict[str, Any],
    from_version: int | None,
    version: int,
) -> AdapterManifest:
    """The manifest of a new version of adapter ``name`` of ``model``."""
    return AdapterManifest(
        name=name, version=version, origin=origin,  # type: ignore[arg-type]
        base_model_name=model.name[:200], base_model=model.fingerprint, lora=lora,
        parameters=sum(t.numel() for t in weights.values()),
        storage="fp32" if density is None else "compeft", density=density,
        sources=sources, recipe=recipe, metrics=metrics, from_version=from_version,
    )  # fmt: skip


class AdapterEntry(Model):
    """One stored version of a named adapter, as ``mos.lora.list`` reports it."""

    model_config = ConfigDict(frozen=True)

    id: str
    cube: str
    blob: str
    size: int
    created_at: datetime
    stale: bool
    manifest: AdapterManifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def sources(self) -> tuple[SourceRef, ...]:
        return self.manifest.sources

    @classmethod
    def from_derived(cls, entry: DerivedEntry) -> AdapterEntry:
        manifest = checked_manifest(entry, AdapterManifest, "adapter")
        return cls(
            id=entry.id,
            cube=entry.cube,
            blob=entry.blob,
            size=entry.size,
            created_at=entry.created_at,
            stale=entry.stale,
            manifest=manifest,
        )
