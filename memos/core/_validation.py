"""Checks on everything a caller hands in, run before anything is embedded or written."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from memos.core._types import MetadataValue
from memos.errors import InvalidInput, TextTooLong

_SHORT_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAMESPACE = r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}"
_PRINCIPAL_NAMESPACE = re.compile(_NAMESPACE)
_CUBE_REF = re.compile(rf"(?:({_NAMESPACE}):)?({_SHORT_NAME})")
# a principal's cubes are named ``principal:name``; the operator's may have no namespace
NAMESPACE_SEPARATOR = ":"
# the name of an adapter (parametric memory), as a pattern for pydantic fields too
ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_META_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
# active memories at which a cube's index is partitioned (see memos.plaintext._partition)
PARTITION_ITEMS = 200_000
INT64 = 2**63  # integers are stored in 64 bits: -INT64 <= n < INT64


@dataclass(frozen=True)
class Limits:
    """Size limits on input. The server passes tighter ones; the defaults suit the SDK.

    ``partition_items``: active memories at which a cube's index becomes partitioned (an
    inverted file, see :mod:`memos.plaintext._partition`); ``None`` never partitions automatically.
    ``max_batch``: records one ``add_many`` call takes (``None``: any number).
    """

    max_text_chars: int = 32_000
    max_tags: int = 32
    max_tag_chars: int = 64
    max_metadata_keys: int = 64
    max_metadata_value_chars: int = 4_096
    max_name_chars: int = 128
    max_k: int = 1_000
    max_new_tokens: int = 4_096
    partition_items: int | None = PARTITION_ITEMS
    max_batch: int | None = None


# a chat's earlier turns: whose they may be, and how many (see turns)
TURN_ROLES = frozenset({"user", "assistant"})
# a chat's stop sequences: as many as OpenAI's API takes, each a short text
MAX_STOPS = 4
MAX_STOP_CHARS = 256
MAX_TURNS = 1000


def cube_ref(name: object) -> str:
    """A cube's full name (``owner:name``) or a name without a namespace."""
    if not isinstance(name, str) or not _CUBE_REF.fullmatch(name):
        raise InvalidInput(
            f"bad cube name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with "
            "a letter or digit, after the owner and a ':' for another principal's cube",
            field="cube",
        )
    return name


def split_cube_ref(name: str) -> tuple[str | None, str]:
    """The namespace (``None``: the operator's) and the name within it of a checked ref."""
    namespace, _, short = name.rpartition(NAMESPACE_SEPARATOR)
    return namespace or None, short


def namespace(principal: str) -> str:
    """``principal``, which names a cube namespace: the server's principals act through one."""
    if not _PRINCIPAL_NAMESPACE.fullmatch(principal):
        raise InvalidInput(
            f"bad principal {principal!r}: a principal names its cubes' namespace, so use 1-64 "
            "letters, digits, '.', '_', '-', '@' or '+', starting with a letter or digit",
            field="principal",
        )
    return principal


def text(value: object, limits: Limits) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"memory text must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidInput("memory text is empty", field="text")
    if len(value) > limits.max_text_chars:
        raise TextTooLong(
            f"memory text has {len(value)} characters; the limit is {limits.max_text_chars}",
            field="text",
            length=len(value),
            limit=limits.max_text_chars,
        )
    if "\x00" in value:
        raise InvalidInput("memory text contains a NUL character", field="text")
    return unicode(value, "text")


def unicode(value: str, field: str, *, label: str | None = None) -> str:
    """``value`` if it is valid Unicode: a lone surrogate (what ``"\\ud800"`` in JSON or a
    non-UTF-8 command-line argument decodes to) can be neither stored nor sent. ``label``
    names the value in the message when ``field`` alone does not."""
    if not is_unicode(value):
        raise InvalidInput(f"{label or field} is not valid Unicode (a lone surrogate)", field=field)
    return value


def is_unicode(value: object) -> bool:
    """Whether ``value`` is a string that is valid Unicode (an id that can exist)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def principal(value: object, field: str, limits: Limits) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limits.max_name_chars:
        raise InvalidInput(
            f"{field} must be a non-empty string of at most {limits.max_name_chars} characters",
            field=field,
        )
    return unicode(value, field)


def optional_principal(value: object, field: str, limits: Limits) -> str | None:
    return None if value is None else principal(value, field, limits)


def reason(value: object, limits: Limits) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limits.max_metadata_value_chars:
        raise InvalidInput(
            f"reason must be a string of at most {limits.max_metadata_value_chars} characters",
            field="reason",
        )
    return unicode(value, "reason")


def instructions(value: object, limits: Limits) -> str | None:
    """A chat's own ``system`` instructions: a string no longer than a memory's text (blank:
    none)."""
    if value is None:
        return None
    checked = _prompt_text(value, "system", "system", limits)
    return checked if checked.strip() else None


def turns(values: object, limits: Limits) -> tuple[dict[str, str], ...]:
    """A chat's earlier turns: ``{"role": "user" | "assistant", "content": text}`` each, in
    order, at most :data:`MAX_TURNS` of them, each text no longer than a memory's."""
    if values is None:
        return ()
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidInput("history must be a list of {role, content} messages", field="history")
    found = list(values)
    if len(found) > MAX_TURNS:
        message = f"history holds {len(found)} messages; the limit is {MAX_TURNS}"
        raise InvalidInput(message, field="history")
    return tuple(_turn(n, value, limits) for n, value in enumerate(found))


def stops(value: object) -> tuple[str, ...]:
    """A chat's stop sequences: one string or a list of at most :data:`MAX_STOPS`, each of 1 to
    :data:`MAX_STOP_CHARS` characters of valid Unicode (none: ``()``)."""
    if value is None:
        return ()
    found = [value] if isinstance(value, str) else value
    if isinstance(found, bytes | Mapping) or not isinstance(found, Iterable):
        raise InvalidInput("stop must be a string or a list of strings", field="stop")
    found = list(found)
    if len(found) > MAX_STOPS:
        message = f"stop holds {len(found)} sequences; the limit is {MAX_STOPS}"
        raise InvalidInput(message, field="stop")
    for number, sequence in enumerate(found):
        if not isinstance(sequence, str) or not 0 < len(sequence) <= MAX_STOP_CHARS:
            message = f"stop[{number}] must be a string of 1 to {MAX_STOP_CHARS} characters"
            raise InvalidInput(message, field="stop")
        unicode(sequence, "stop", label=f"stop[{number}]")
    return tuple(dict.fromkeys(found))


def _turn(number: int, value: object, limits: Limits) -> dict[str, str]:
    where = f"history[{number}]"
    if not isinstance(value, Mapping) or set(value) != {"role", "content"}:
        raise InvalidInput(f"{where} must be exactly {{role, content}}", field="history")
    role, content = value["role"], value["content"]
    if role not in TURN_ROLES:
        raise InvalidInput(f"{where}: role must be user or assistant", field="history")
    return {"role": role, "content": _prompt_text(content, "history", f"{where}.content", limits)}


def _prompt_text(value: object, field: str, label: str, limits: Limits) -> str:
    """Text a caller puts in a chat's prompt (``label`` names it): a string no longer than a
    memory's, without NUL, valid Unicode; it may be empty."""
    if not isinstance(value, str) or len(value) > limits.max_text_chars or "\x00" in value:
        raise InvalidInput(
            f"{label} must be a string of at most {limits.max_text_chars} characters, without NUL",
            field=field,
        )
    return unicode(value, field, label=label)


def tags(values: Iterable[object] | None, limits: Limits) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        raise InvalidInput("tags must be a list of strings, not one string", field="tags")
    checked: list[str] = []
    for tag in values:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > limits.max_tag_chars:
            raise InvalidInput(
                f"bad tag {tag!r}: tags are non-empty strings of at most "
                f"{limits.max_tag_chars} characters",
                field="tags",
            )
        unicode(tag, "tags")
        if tag not in checked:
            checked.append(tag)
    if len(checked) > limits.max_tags:
        raise InvalidInput(f"at most {limits.max_tags} tags per memory", field="tags")
    return tuple(checked)


def metadata(values: Mapping[Any, Any] | None, limits: Limits) -> dict[str, MetadataValue]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput("metadata must be a mapping of names to values", field="metadata")
    if len(values) > limits.max_metadata_keys:
        raise InvalidInput(
            f"at most {limits.max_metadata_keys} metadata keys per memory", field="metadata"
        )
    return {_metadata_key(key): _metadata_value(key, val, limits) for key, val in values.items()}


def _metadata_key(key: object) -> str:
    if not isinstance(key, str) or not _META_KEY.fullmatch(key):
        raise InvalidInput(
            f"bad metadata key {key!r}: use up to 64 letters, digits, '_', '.' or '-'",
            field="metadata",
        )
    return key


def _metadata_value(key: str, value: object, limits: Limits) -> MetadataValue:
    if value is None or isinstance(value, bool | str | int | float):
        if isinstance(value, str) and len(value) > limits.max_metadata_value_chars:
            raise InvalidInput(f"metadata {key!r} is too long", field="metadata")
        if isinstance(value, str):
            unicode(value, "metadata", label=f"metadata {key!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"metadata {key!r} must be a finite number", field="metadata")
        if isinstance(value, int) and not -INT64 <= value < INT64:
            raise InvalidInput(f"metadata {key!r} does not fit in 64 bits", field="metadata")
        return value
    raise InvalidInput(
        f"metadata {key!r} has a value of type {type(value).__name__}; "
        "values must be strings, numbers, booleans or null",
        field="metadata",
    )


def timestamp(value: object, field: str) -> datetime:
    """An aware UTC datetime from a datetime or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(f"{field} is not an ISO 8601 time: {value!r}", field=field) from exc
    if not isinstance(value, datetime):
        raise InvalidInput(f"{field} must be a datetime or ISO 8601 string", field=field)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01 east of UTC or 9999-12-31 west of it: a time no datetime can hold
        raise InvalidInput(
            f"{field} {value.isoformat()} is outside the years 1-9999 once shifted to UTC",
            field=field,
        ) from None


def positive(value: object, field: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"{field} must be an integer from 1 to {maximum}", field=field)
    return value


def count(value: object, field: str) -> int:
    """A non-negative integer that fits the store's 64-bit columns (a seq, a limit)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < INT64:
        raise InvalidInput(f"{field} must be an integer from 0 to {INT64 - 1}", field=field)
    return value


_DIGEST = re.compile(r"[0-9a-f]{64}")


def digest(value: object, field: str) -> str:
    """A sha256 hex digest (64 lowercase hex digits)."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise InvalidInput(f"{field} must be a sha256 digest (64 hex digits)", field=field)
    return value
