"""LoRA adapter weights stored ComPEFT-style: sparse ternary factors in a safetensors file.

ComPEFT (Yadav et al. 2023, "Compression for Communicating Parameter Efficient Updates via
Sparsification and Quantization") keeps the top-k% entries of an update by magnitude, replaces
each by its sign and keeps one scale per tensor. Here it is applied to the stored LoRA factors
themselves (``lora_A`` ``[r, in]`` and ``lora_B`` ``[out, r]``). Each tensor ``w`` (flattened
row-major, ``n`` entries) becomes::

    k        = min(n, max(1, round(density · n)))    (0 for an empty tensor)
    kept     = the k largest |w| (ties broken by torch.topk), less exact zeros: a zero stays 0
    scale    = mean |w| over kept (0 when nothing is kept)
    restored = sign(w) · scale on kept positions, 0 elsewhere

The scale: ComPEFT uses ``α · std(w)`` with α tuned on validation data. For a given support
and signs the least-squares scale is the mean magnitude of the kept entries (the derivative of
Σ(|w_i| − s)² vanishes there), so it is never worse than ``α · std`` for any α. Measured on
r=8 LoRA factors of SmolLM2-135M's shapes filled with Gaussian noise, relative L2 error at
density 0.05 / 0.1 / 0.2 / 0.3: mean magnitude 0.852 / 0.758 / 0.620 / 0.525, ComPEFT's α=1
0.903 / 0.829 / 0.706 / 0.606; a single α matches the mean magnitude only when tuned for
each density (2.34 / 2.06 / 1.75 / 1.55), while the mean magnitude needs no tuning. The error
of one sign and scale is lowest near density 0.5 (0.44 for Gaussian tensors) and rises again
towards 1.0 (0.60): small entries rounded up to the common scale cost more than they add.

File layout (safetensors; nothing is pickled)::

    mask    uint8   [⌈Σn / 8⌉]     kept-position bits of every tensor, concatenated in
                                    ``names`` order, np.packbits (first bit = MSB); padding 0
    signs   uint8   [⌈kept / 8⌉]   one bit per kept entry in the same order, 1 = negative;
                                    padding 0
    scales  float32 [len(names)]    one scale per tensor
    metadata  format "memos-lora-compeft", format_version "1", density str(float),
              names (JSON list), shapes (JSON list of lists), kept (decimal total of kept bits)

The bits are concatenated rather than stored as tensors per weight because a safetensors header
entry costs about 130 bytes of JSON for a PEFT-length name: four per weight for SmolLM2's 420
factors is about 240 KB, 70% more than the payload at density 0.1. Size: ``Σn/8 + kept/8 +
4·len(names)`` bytes plus the header (33 KB, mostly the names): 370 KB for SmolLM2's
2.44M-parameter r=8 adapter at density 0.1, against 9.8 MB of fp32.

Not implemented (a later format_version could add it): kept positions as an index list. The
bitmask costs one bit per parameter at every density; delta-coded uint16 indices cost 16 bits
per kept entry (smaller below density 1/16), and Golomb-Rice coded gaps come close to the
entropy bound H(density) bits per parameter (0.47 at 0.1, 0.29 at 0.05), half the bitmask.

Decoding trusts nothing: exactly the expected metadata keys with canonical values, exactly the
three tensors with the dtypes and lengths the metadata implies, zero padding bits, a mask
whose popcount is the declared sign count and at most k per tensor, finite non-negative scales,
at most 2**28 elements in all. Anything else is a :class:`memos.errors.CorruptArtifact`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from memos.errors import CorruptArtifact, InvalidInput

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_ELEMENTS",
    "compress",
    "decompress",
    "kept_count",
    "raw_bytes",
    "reconstruction_error",
]

FORMAT = "memos-lora-compeft"
FORMAT_VERSION = "1"
MAX_ELEMENTS = 2**28
MAX_DIMS = 8
_METADATA_KEYS = frozenset({"format", "format_version", "density", "names", "shapes", "kept"})
_TENSORS = frozenset({"mask", "signs", "scales"})
_COUNT = re.compile(r"0|[1-9][0-9]{0,18}")
# what safetensors' parser, torch's buffer views and the JSON header reader may raise
_LOAD_ERRORS = (
    SafetensorError,
    ValueError,
    RuntimeError,
    OverflowError,
    KeyError,
    TypeError,
    AssertionError,
    RecursionError,
)

Bits = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Header:
    density: float
    names: list[str]
    shapes: list[list[int]]
    kept: int

    @property
    def sizes(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]


# encoding -------------------------------------------------------------------------------


def compress(weights: Mapping[str, torch.Tensor], *, density: float) -> bytes:
    """The safetensors bytes of ``weights`` (floating tensors, converted to fp32) keeping the
    ``density`` fraction of each tensor's entries, largest magnitudes first, as sign and one
    scale per tensor. ``density`` is in (0, 1]; at 1.0 every nonzero entry is kept."""
    rate = _checked_density(density)
    flats = _flattened(weights)
    # numpy, not torch, selects: torch's boolean indexing is ~1000x slower on CPU here
    masks = [_kept_mask(flat, rate) for flat in flats.values()]
    kept = [flat[mask] for flat, mask in zip(flats.values(), masks, strict=True)]
    signs = [values < 0 for values in kept]
    tensors = {
        "mask": torch.from_numpy(np.packbits(_cat(masks))),
        "signs": torch.from_numpy(np.packbits(_cat(signs))),
        "scales": torch.tensor([_scale(values) for values in kept], dtype=torch.float32),
    }
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "density": str(rate),
        "names": json.dumps(list(flats)),
        "shapes": json.dumps([list(weights[name].shape) for name in flats]),
        "kept": str(sum(len(values) for values in kept)),
    }
    return save(tensors, metadata=metadata)


def kept_count(size: int, density: float) -> int:
    """How many of a tensor's ``size`` entries a given density keeps (at most)."""
    if size == 0:
        return 0
    return min(size, max(1, round(density * size)))


def _checked_density(density: float) -> float:
    if isinstance(density, bool) or not isinstance(density, int | float):
        raise InvalidInput("density must be a number in (0, 1]")
    rate = float(density)
    if not 0.0 < rate <= 1.0:
        raise InvalidInput(f"density must be in (0, 1], not {density!r}")
    return rate


def _flattened(weights: Mapping[str, torch.Tensor]) -> dict[str, Floats]:
    """Each weight as a flat fp32 array, in the mapping's order, after checking it."""
    if not isinstance(weights, Mapping):
        raise InvalidInput("weights must be a mapping of names to tensors")
    flats: dict[str, Floats] = {}
    for name, tensor in weights.items():
        if not isinstance(name, str):
            raise InvalidInput(f"weight names must be strings, not {name!r}")
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise InvalidInput(f"weight {name} is not a floating-point tensor")
        if tensor.dim() > MAX_DIMS:
            raise InvalidInput(f"weight {name} has more than {MAX_DIMS} dimensions")
        flat: Floats = tensor.detach().to(device="cpu", dtype=torch.float32).reshape(-1).numpy()
        if not bool(np.isfinite(flat).all()):
            raise InvalidInput(f"weight {name} holds values that are not finite in fp32")
        flats[name] = flat
    if sum(flat.size for flat in flats.values()) > MAX_ELEMENTS:
        raise InvalidInput(f"the weights hold more than {MAX_ELEMENTS} elements")
    return flats


def _kept_mask(flat: Floats, density: float) -> Bits:
    """The positions of the ``k`` largest magnitudes, except exact zeros."""
    magnitude = np.abs(flat)
    count = kept_count(flat.size, density)
    if count == flat.size:
        return magnitude > 0
    mask = np.zeros(flat.size, dtype=np.bool_)
    # torch.topk is a few times faster than np.argpartition for these sizes
    mask[torch.topk(torch.from_numpy(magnitude), count, sorted=False).indices.numpy()] = True
    return mask & (magnitude > 0)


def _scale(kept: Floats) -> float:
    """The least-squares scale of a ternary tensor with this support: the mean magnitude."""
    if kept.size == 0:
        return 0.0
    return float(np.abs(kept).mean(dtype=np.float64))


def _cat(parts: Sequence[Bits]) -> Bits:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.bool_)


# decoding -------------------------------------------------------------------------------


def decompress(data: bytes) -> dict[str, torch.Tensor]:
    """The fp32 tensors of a file made by :func:`compress`: 0 or ±scale, of the recorded shapes,
    in the recorded order. Raises CorruptArtifact for anything that is not such a file."""
    tensors, metadata = _read(data)
    header = _checked_header(metadata)
    _check_layout(tensors, header)
    sizes = header.sizes
    mask = _unpacked(tensors["mask"], sum(sizes), "mask")
    counts = _counts(mask, sizes, header)
    signs = _unpacked(tensors["signs"], header.kept, "signs")
    scales = _checked_scales(tensors["scales"])
    flat = np.zeros(len(mask), dtype=np.float32)
    flat[mask] = np.where(signs, np.float32(-1), np.float32(1)) * np.repeat(scales, counts)
    ends = np.cumsum(sizes, dtype=np.int64)
    return {
        name: torch.from_numpy(flat[end - size : end].copy()).reshape(shape)
        for name, shape, size, end in zip(header.names, header.shapes, sizes, ends, strict=True)
    }


def _read(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not isinstance(data, bytes):
        raise CorruptArtifact("a compressed adapter must be bytes")
    try:
        tensors = load(data)
        metadata = _header_metadata(data)
    except _LOAD_ERRORS as exc:
        raise CorruptArtifact(f"the compressed adapter is not valid safetensors: {exc}") from exc
    return tensors, metadata


def _header_metadata(data: bytes) -> dict[str, str]:
    # safetensors: 8-byte little-endian header length, then the JSON header
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CorruptArtifact("the compressed adapter's header has no metadata of strings")
    return metadata


def _checked_header(metadata: dict[str, str]) -> _Header:
    if set(metadata) != _METADATA_KEYS:
        raise CorruptArtifact(f"the metadata keys are {sorted(metadata)}")
    if metadata["format"] != FORMAT or metadata["format_version"] != FORMAT_VERSION:
        raise CorruptArtifact("the file is not a memos-lora-compeft version 1 adapter")
    names = _parsed_names(metadata["names"])
    shapes = _parsed_shapes(metadata["shapes"], len(names))
    kept = _parsed_count(metadata["kept"])
    return _Header(_parsed_density(metadata["density"]), names, shapes, kept)


def _parsed_density(text: str) -> float:
    try:
        density = float(text)
    except ValueError as exc:
        raise CorruptArtifact(f"the density {text!r} is not a number") from exc
    if str(density) != text or not 0.0 < density <= 1.0:
        raise CorruptArtifact(f"the density {text!r} is not a canonical number in (0, 1]")
    return density


def _parsed_names(text: str) -> list[str]:
    names = _json(text, "names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise CorruptArtifact("the names are not a JSON list of strings")
    if len(set(names)) != len(names):
        raise CorruptArtifact("the names are not unique")
    return names


def _parsed_shapes(text: str, count: int) -> list[list[int]]:
    shapes = _json(text, "shapes")
    if not isinstance(shapes, list) or len(shapes) != count:
        raise CorruptArtifact("the shapes are not a JSON list with one shape per name")
    for shape in shapes:
        if not isinstance(shape, list) or len(shape) > MAX_DIMS:
            raise CorruptArtifact(f"the shape {shape!r} is not a list of at most {MAX_DIMS}")
        if not all(type(dim) is int and dim >= 0 for dim in shape):
            raise CorruptArtifact(f"the shape {shape!r} is not of non-negative integers")
    if sum(math.prod(shape) for shape in shapes) > MAX_ELEMENTS:
        raise CorruptArtifact(f"the shapes declare more than {MAX_ELEMENTS} elements")
    return shapes


def _parsed_count(text: str) -> int:
    if _COUNT.fullmatch(text) is None:
        raise CorruptArtifact(f"the kept count {text!r} is not a canonical decimal")
    return int(text)


def _json(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptArtifact(f"the {field} are not JSON") from exc


def _check_layout(tensors: dict[str, torch.Tensor], header: _Header) -> None:
    if set(tensors) != _TENSORS:
        raise CorruptArtifact(f"the tensors are {sorted(tensors)}, not mask, signs and scales")
    if header.kept > sum(header.sizes):
        raise CorruptArtifact("the kept count exceeds the number of elements")
    expected = {
        "mask": (torch.uint8, (-(-sum(header.sizes) // 8),)),
        "signs": (torch.uint8, (-(-header.kept // 8),)),
        "scales": (torch.float32, (len(header.names),)),
    }
    for name, (dtype, shape) in expected.items():
        tensor = tensors[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise CorruptArtifact(f"tensor {name} is {tensor.dtype}{list(tensor.shape)}")


def _unpacked(packed: torch.Tensor, count: int, name: str) -> Bits:
    bits = np.unpackbits(packed.numpy())
    if bits[count:].any():
        raise CorruptArtifact(f"the {name} bits have nonzero padding")
    return bits[:count].astype(np.bool_)


def _counts(mask: Bits, sizes: list[int], header: _Header) -> npt.NDArray[np.int64]:
    """Kept entries per tensor, checked against the declared total and the density."""
    ends = np.cumsum([0, *sizes], dtype=np.int64)
    running = np.concatenate([np.zeros(1, np.int64), np.cumsum(mask, dtype=np.int64)])
    counts: npt.NDArray[np.int64] = running[ends[1:]] - running[ends[:-1]]
    if int(counts.sum()) != header.kept:
        raise CorruptArtifact("the mask's popcount is not the number of signs")
    limits = np.array([kept_count(size, header.density) for size in sizes], dtype=np.int64)
    if bool((counts > limits).any()):
        raise CorruptArtifact("a tensor keeps more entries than its density allows")
    return counts


def _checked_scales(scales: torch.Tensor) -> npt.NDArray[np.float32]:
    if not bool((torch.isfinite(scales) & (scales >= 0)).all()):
        raise CorruptArtifact("the scales are not finite and non-negative")
    values: npt.NDArray[np.float32] = scales.numpy()
    return values


# reporting ------------------------------------------------------------------------------


def raw_bytes(weights: Mapping[str, torch.Tensor]) -> int:
    """The size of ``weights``' plain fp32 safetensors encoding, for comparison."""
    return len(
        save({name: w.detach().to("cpu", torch.float32).clone() for name, w in weights.items()})
    )


def reconstruction_error(
    original: Mapping[str, torch.Tensor], restored: Mapping[str, torch.Tensor]
) -> float:
    """Relative L2 error over all tensors: ‖original − restored‖ / ‖original‖ (0 when both are
    zero). The two must hold the same names and shapes."""
    if set(original) != set(restored):
        raise InvalidInput("the two sets of weights have different names")
    error = total = 0.0
    for name, want in original.items():
        got = restored[name]
        if got.shape != want.shape:
            raise InvalidInput(f"weight {name} is {list(got.shape)}, not {list(want.shape)}")
        want64, got64 = want.detach().to(torch.float64), got.detach().to(torch.float64)
        error += float((want64 - got64).square().sum())
        total += float(want64.square().sum())
    if total == 0.0:
        return 0.0 if error == 0.0 else math.inf
    return math.sqrt(error / total)
