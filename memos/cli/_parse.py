"""Parsing the few option values that need more than typer's types: ``--meta key=value``."""

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from memos.errors import InvalidInput

if TYPE_CHECKING:
    from memos.core._types import MetadataValue


def _reject_constant(name: str) -> float:
    # NaN and Infinity are not numbers a metadata value may hold; keep such words as text.
    raise ValueError(name)


def meta_value(raw: str) -> "MetadataValue":
    """A JSON scalar when ``raw`` is one (``42``, ``1.5``, ``true``, ``null``, ``"007"``),
    otherwise the text as it was typed."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return raw
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return raw


def meta_pairs(pairs: Iterable[str] | None) -> dict[str, "MetadataValue"]:
    """``["k=v", ...]`` as a mapping; a later key replaces an earlier one."""
    metadata: dict[str, MetadataValue] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"bad --meta {pair!r}: expected key=value", field="metadata")
        metadata[key.strip()] = meta_value(raw)
    return metadata


def parsed_json_object(raw: str, option: str) -> dict[str, Any]:
    """The JSON object an option was given as (``--budgets '{"kv_blocks": 8}'``)."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        raise InvalidInput(f"--{option} is not JSON: {exc}", field=option) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"--{option} must be a JSON object", field=option)
    return value
