"""Redaction on write: personal data in a memory's text becomes typed placeholders.

:func:`redact` replaces e-mail addresses, phone numbers, payment card numbers and IBANs, and
whatever a cube owner's custom patterns match, with ``[EMAIL]``, ``[PHONE]``, ``[CARD]``,
``[IBAN]`` or ``[<NAME>]``, before the text is embedded or stored. It reports how many of each
kind it replaced, never the values. The detectors run in a fixed order, each on the text the
ones before it left: iban, card, email, phone, then the custom patterns in the policy's order,
so a span is replaced once and an IBAN is never also counted as a card or a phone.

Boundaries. A candidate never starts or ends inside a longer token: never next to a letter,
digit or ``_``, and a card, phone or e-mail starting with a digit never joined to another number
by one of `` .,/:-`` (``3.14``, ``2024-01-15``, ``10:30``, ``1,000,000``, ``1.2.3``). The same
pairs of characters are checked on both sides of every candidate, whichever detector it belongs
to, so what a later detector replaces never frees what an earlier one refused, and redacting a
redacted text changes nothing.

- iban: two letters, two check digits (02-98), 11-30 letters or digits, written as one token or
  in groups of four (the last one to four) split by single spaces; the ISO 7064 mod-97
  remainder must be 1. Letters of either case. Every IBAN in a run of single-spaced tokens is
  found, so a word or another IBAN right after one does not hide it.
- card: 13-19 digits passing the Luhn check, as one group or as a group of four, groups of
  three to six and a last of one to six, split by single spaces or dashes (4-4-4-4, 4-6-5,
  4-4-4-1). Every span of a run of digit groups that is a card is replaced (overlapping spans as
  one), so a word or number before it (``visa13``, ``order 1234``) or an expiry or CVV after it
  does not hide it; groups of two (``2024-01-15 2024-01-16``) never make a card. One in ten
  numbers of 13-19 digits passes Luhn, so such a number (an order or account number, the digits
  of a mistyped IBAN) may be redacted as a card: privacy first.
- email: a local part of at most 64 word characters, dots, ``%``, ``+`` or ``-`` starting with a
  word character, ``@``, dot-separated domain labels and a top-level domain of at least two
  letters (``a@b``, ``a@b.c`` and ``user@localhost`` are not addresses). Unicode letters count;
  quoted local parts and IP-literal domains are not recognised.
- phone: ``+`` and 7-15 digits with single spaces, dots, dashes or parentheses between them
  (``+44 20 7946 0958``, ``+1 (555) 123-4567``); a North American 3-3-4 number with one kind of
  separator (``555-123-4567``, ``1 800 555 1234``) or ``(555) 123-4567``; a national number
  with a trunk 0 in groups split by one kind of separator (``020 7946 0958``,
  ``06 12 34 56 78``, ``(020) 7946 0958``), 9-12 digits.

Precision over recall for bare digits: a run of digits with no ``+``, separators or parentheses
(``5551234567``) is not a phone, nor is a 7-digit local number (``555-1234``), which reads the
same as a range (``100-1000``), nor are groups with mixed separators (``01.02.2024 10``); a
date, time, version, amount, year or short number is never a phone or a card. Non-ASCII decimal
digits count as digits.

Custom patterns are RE2 expressions (google-re2), so matching is linear in the text whatever a
cube's owner writes; one that can match the empty string is refused. They match on the text the
built-ins left, never inside a placeholder, with ``^``, ``$`` and ``\\b`` meaning what they mean
in the whole text. Idempotence (redacting twice changes nothing the second time) is guaranteed
for the built-ins; a custom pattern keeps it when it does not depend on the text around it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, Protocol

import re2  # type: ignore[import-untyped]
from pydantic import ConfigDict, Field, field_validator

from memos.core._model import Model

__all__ = [
    "BUILTIN_KINDS",
    "CustomPattern",
    "Redacted",
    "RedactionPolicy",
    "placeholder",
    "redact",
]

BUILTIN_KINDS: tuple[str, ...] = ("email", "phone", "card", "iban")
_ORDER = ("iban", "card", "email", "phone")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_PATTERN_CHARS = 1000
MAX_CUSTOM_PATTERNS = 32


class _Strict(Model):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class CustomPattern(_Strict):
    """A cube owner's own kind of personal data: its name (the placeholder's, lowercase) and an
    RE2 expression, checked when the pattern is made."""

    name: str
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN_CHARS)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError("a name is 1-32 lowercase letters, digits or '_', from a letter")
        if name in BUILTIN_KINDS:
            raise ValueError(f"{name!r} is a built-in kind")
        return name

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            regex = _compile(pattern)
        except re2.error as exc:
            raise ValueError(f"not an RE2 expression: {_message(exc)}") from None
        if _matches_empty(regex):
            raise ValueError("the pattern matches the empty string")
        return pattern


class RedactionPolicy(_Strict):
    """Which built-in detectors run (all by default) and the custom patterns after them."""

    # arrays in JSON: a list is taken for a tuple here, the values inside stay strict
    kinds: tuple[str, ...] = Field(default=BUILTIN_KINDS, strict=False)
    custom: tuple[CustomPattern, ...] = Field(
        default=(), max_length=MAX_CUSTOM_PATTERNS, strict=False
    )

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [kind for kind in kinds if kind not in BUILTIN_KINDS]
        if unknown:
            raise ValueError(f"unknown kinds {unknown} (known: {', '.join(BUILTIN_KINDS)})")
        if len(set(kinds)) != len(kinds):
            raise ValueError("a kind is named twice")
        return kinds

    @field_validator("custom")
    @classmethod
    def _unique_names(cls, custom: tuple[CustomPattern, ...]) -> tuple[CustomPattern, ...]:
        names = [pattern.name for pattern in custom]
        if len(set(names)) != len(names):
            raise ValueError("two custom patterns have the same name")
        return custom


class Redacted(NamedTuple):
    """The redacted text, and how many spans of each kind were replaced (kinds with none left
    out)."""

    text: str
    counts: dict[str, int]


def placeholder(kind: str) -> str:
    """What replaces a span of ``kind``: ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``, or the
    custom pattern's name in capitals."""
    return f"[{kind.upper()}]"


def redact(text: str, policy: RedactionPolicy) -> Redacted:
    """``text`` with every span the policy detects replaced by its kind's placeholder."""
    counts: dict[str, int] = {}
    for kind in _ORDER:
        if kind in policy.kinds:
            text, n = _DETECTORS[kind](text)
            if n:
                counts[kind] = n
    if policy.custom:
        text = _redact_custom(text, policy, counts)
    return Redacted(text, counts)


# -- the built-ins: Python regular expressions, fixed, linear on any input ---------------------

# A number does not start or end inside a longer token: next to a word character, or joined to
# a digit by one of these separators. Every detector checks the same pairs of characters on
# both sides, so what a later one replaces never frees what an earlier one refused.
_JOIN = "[ .,/:-]"
_NUMBER_START = rf"(?<!\w)(?<!\d{_JOIN})"
_NUMBER_END = rf"(?!\w)(?!{_JOIN}\d)"

# Runs of groups (see _Groups): a card's digit groups split by single spaces or dashes, an
# IBAN's tokens split by single spaces. A run starts where no run goes on.
_CARD_RUN = re.compile(r"(?<!\d)(?<!\d[ -])\d++(?:[ -]\d++)*+")
_CARD_SPLIT = re.compile(r"([ -])")
_IBAN_RUN = re.compile(r"(?<!\w)[A-Za-z]{2}[0-9]{2}[A-Za-z0-9]*+(?: [A-Za-z0-9]++)*+")
_IBAN_SPLIT = re.compile(r"( )")
_IBAN_START = re.compile(r"[A-Za-z]{2}(?:0[2-9]|[1-8][0-9]|9[0-8])")
_EMAIL = re.compile(
    rf"(?<!\w)(?:(?!\d)|(?<!\d{_JOIN}))"  # a local part from a digit: not glued to a number
    r"\w[\w.%+-]{0,63}@"
    r"(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.){1,126}[^\W\d_]{2,63}(?!\w)"
)
_PHONE_END = rf"(?![\w+])(?!{_JOIN}\d)"
_PHONE = re.compile(
    r"(?:(?P<intl>(?<![\w+])\+[1-9](?:\)?[ .-]?\(?\d){6,14})"  # +44 20 7946 0958
    r"|(?P<paren>\((?:\d{3}|0\d{1,4})\) ?\d{2,8}(?:[ .-]\d{2,8}){0,3})"  # (555) 123-4567
    rf"|{_NUMBER_START}(?<![^\W\d]-)(?:"  # not after a number, nor a word and a dash
    r"(?P<nanp>(?:1[ .-])?\d{3}(?P<s1>[ .-])\d{3}(?P=s1)\d{4})"  # 555-123-4567
    r"|(?P<trunk>0\d{1,4}(?P<s2>[ .-])\d{2,8}(?:(?P=s2)\d{2,8}){0,3})))"  # 020 7946 0958
    + _PHONE_END
)


def _digits(text: str) -> int:
    return sum(ch.isdecimal() for ch in text)


def _luhn(digits: str) -> bool:
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = int(ch) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _is_card(groups: Sequence[str]) -> bool:
    """13-19 digits passing Luhn: one group, or 4 digits, groups of 3 to 6, a last of 1 to 6."""
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19:
        return False
    shaped = len(groups) == 1 or (
        len(groups[0]) == 4
        and all(3 <= len(group) <= 6 for group in groups[1:-1])
        and len(groups[-1]) <= 6
    )
    return shaped and _luhn(digits)


def _is_iban(groups: Sequence[str]) -> bool:
    """One token, or groups of four and a last of one to four; mod-97 remainder 1."""
    if len(groups) > 1 and (any(len(group) != 4 for group in groups[:-1]) or len(groups[-1]) > 4):
        return False
    iban = "".join(groups).upper()
    if not (15 <= len(iban) <= 34 and _IBAN_START.match(iban)):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


class _Groups(NamedTuple):
    """How a run of groups is searched: ``split`` cuts it into groups and separators, ``fits``
    says whether a span of at most ``most`` groups is one of ``kind``. The run's first group
    starts a span only where ``start`` matches before the run, its last ends one only where
    ``end`` matches after it (a run glued to a longer token at that side)."""

    kind: str
    split: re.Pattern[str]
    fits: Callable[[Sequence[str]], bool]
    most: int
    start: re.Pattern[str]
    end: re.Pattern[str]


def _spans(groups: Sequence[str], first: int, stop: int, spec: _Groups) -> list[tuple[int, int]]:
    """From each group on from ``first``, the longest span that fits and ends by ``stop``;
    overlapping spans merged, so digits two candidates share are never left half redacted."""
    spans: list[tuple[int, int]] = []
    for i in range(first, len(groups)):
        last = min(stop, i + spec.most)
        j = next((j for j in range(last, i, -1) if spec.fits(groups[i:j])), i)
        if j == i:
            continue
        if spans and i < spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], j))
        else:
            spans.append((i, j))
    return spans


def _replace_groups(run: re.Match[str], spec: _Groups) -> tuple[str, int]:
    """The run with its spans that fit replaced."""
    parts = spec.split.split(run[0])  # group, separator, group, ..., group
    groups = parts[::2]
    first = 0 if spec.start.match(run.string, run.start()) else 1
    stop = len(groups) if spec.end.match(run.string, run.end()) else len(groups) - 1
    out: list[str] = []
    done = 0
    spans = _spans(groups, first, stop, spec)
    for i, j in spans:
        out += [*parts[done : 2 * i], placeholder(spec.kind)]
        done = 2 * j - 1  # the separator after the span's last group
    out += parts[done:]
    return "".join(out), len(spans)


def _substitute(
    pattern: re.Pattern[str], text: str, rewrite: Callable[[re.Match[str]], tuple[str, int]]
) -> tuple[str, int]:
    total = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal total
        new, found = rewrite(match)
        total += found
        return new

    return pattern.sub(replace, text), total


# An IBAN token is glued on by a word character alone; a card's digits as any number's are.
_IBAN_GROUPS = _Groups("iban", _IBAN_SPLIT, _is_iban, 9, re.compile(""), re.compile(r"(?!\w)"))
_CARD_GROUPS = _Groups(
    "card", _CARD_SPLIT, _is_card, 6, re.compile(r"(?<!\w)(?<!\d[.,/:])"), re.compile(_NUMBER_END)
)


def _ibans(text: str) -> tuple[str, int]:
    return _substitute(_IBAN_RUN, text, lambda run: _replace_groups(run, _IBAN_GROUPS))


def _cards(text: str) -> tuple[str, int]:
    return _substitute(_CARD_RUN, text, lambda run: _replace_groups(run, _CARD_GROUPS))


def _emails(text: str) -> tuple[str, int]:
    return _EMAIL.subn(placeholder("email"), text)


def _phone(match: re.Match[str]) -> tuple[str, int]:
    if match["intl"] is None and not 9 <= _digits(match[0]) <= 12:
        return match[0], 0
    return placeholder("phone"), 1


def _phones(text: str) -> tuple[str, int]:
    return _substitute(_PHONE, text, _phone)


_DETECTORS: dict[str, Callable[[str], tuple[str, int]]] = {
    "iban": _ibans,
    "card": _cards,
    "email": _emails,
    "phone": _phones,
}


# -- custom patterns: RE2, on the UTF-8 bytes, around the placeholders -------------------------


class _Match(Protocol):
    def span(self) -> tuple[int, int]: ...


class _Regex(Protocol):
    def finditer(self, text: bytes, pos: int, endpos: int) -> Iterator[_Match]: ...

    def match(self, text: bytes, pos: int, endpos: int) -> _Match | None: ...


def _options() -> object:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is the caller's error, not a log line
    return options


_OPTIONS = _options()
# what comes before and after a position, as far as RE2's empty-width assertions can tell
# (\A \z ^ $ \b \B, with or without (?m)): start or end, a newline, a word character, another
_EDGES = ("", "\n", "a", " ")


@functools.lru_cache(maxsize=128)  # each RE2 object stays within its max_mem (8 MiB)
def _compile(pattern: str) -> _Regex:
    regex: _Regex = re2.compile(pattern, _OPTIONS)
    return regex


def _message(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


def _matches_empty(regex: _Regex) -> bool:
    """Whether the pattern matches the empty string somewhere in some text: tried at a
    position between each pair of the contexts an empty match can depend on."""
    for before in _EDGES:
        for after in _EDGES:
            text = (before + after).encode()
            if regex.match(text, len(before), len(before)) is not None:
                return True
    return False


@functools.lru_cache(maxsize=64)
def _placeholders(names: tuple[str, ...]) -> re.Pattern[bytes]:
    alternatives = "|".join(re.escape(name.upper()) for name in names)
    return re.compile(rb"\[(?:" + alternatives.encode() + rb")\]")


def _gaps(data: bytes, placeholders: re.Pattern[bytes]) -> Iterator[tuple[int, int]]:
    start = 0
    for match in placeholders.finditer(data):
        yield start, match.start()
        start = match.end()
    yield start, len(data)


def _on_characters(data: bytes, start: int, end: int, gap: tuple[int, int]) -> tuple[int, int]:
    """A byte span widened to whole UTF-8 characters (RE2's ``\\C`` can match part of one)."""
    while start > gap[0] and data[start] & 0xC0 == 0x80:
        start -= 1
    while end < gap[1] and data[end] & 0xC0 == 0x80:
        end += 1
    return start, end


def _replace_custom(
    data: bytes, regex: _Regex, mark: bytes, placeholders: re.Pattern[bytes]
) -> tuple[bytes, int]:
    """``data`` with each match of ``regex`` between the placeholders replaced by ``mark``;
    ``^``, ``$`` and ``\\b`` see the whole text around a gap."""
    pieces: list[bytes] = []
    done = 0
    for gap in _gaps(data, placeholders):
        for match in regex.finditer(data, *gap):
            start, end = match.span()
            if end == start:
                continue  # refused when the pattern is made; never a placeholder per position
            start, end = _on_characters(data, start, end, gap)
            start = max(start, done)
            if end > start:
                pieces += [data[done:start], mark]
                done = end
    pieces.append(data[done:])
    return b"".join(pieces), len(pieces) // 2


def _redact_custom(text: str, policy: RedactionPolicy, counts: dict[str, int]) -> str:
    """Apply the custom patterns in order, each on the text the ones before it left."""
    names = (*policy.kinds, *(custom.name for custom in policy.custom))
    placeholders = _placeholders(names)
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate passes through unchanged
    for custom in policy.custom:
        mark = placeholder(custom.name).encode()
        data, found = _replace_custom(data, _compile(custom.pattern), mark, placeholders)
        if found:
            counts[custom.name] = found
    return data.decode("utf-8", "surrogatepass")
