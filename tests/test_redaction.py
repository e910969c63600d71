"""Redaction on write: each kind found, numbers that are not personal data left alone, counts
without values, idempotence, custom RE2 patterns and their checks, linear time on hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from memos.core._redaction import (
    BUILTIN_KINDS,
    CustomPattern,
    Redacted,
    RedactionPolicy,
    placeholder,
    redact,
)

POLICY = RedactionPolicy()
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
EMAIL = "jane.doe+memos@mail.example.co.uk"
PHONE = "+44 20 7946 0958"


def luhn_check_digit(body: str) -> str:
    """The digit that makes ``body`` + it pass the Luhn check."""
    total = 0
    for position, ch in enumerate(reversed(body)):
        value = int(ch) * (1 if position % 2 else 2)
        total += value - 9 if value > 9 else value
    return str(-total % 10)


def test_placeholders() -> None:
    assert [placeholder(kind) for kind in BUILTIN_KINDS] == [
        "[EMAIL]",
        "[PHONE]",
        "[CARD]",
        "[IBAN]",
    ]
    assert placeholder("employee_id") == "[EMPLOYEE_ID]"
    assert luhn_check_digit("411111111111111") == "1"


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (f"write to {EMAIL} today", "write to [EMAIL] today", "email"),
        ("<alice@example.com>.", "<[EMAIL]>.", "email"),
        ("mailto:bob_o@sub.example.museum", "mailto:[EMAIL]", "email"),
        ("jöhn@exämple.de hat geschrieben", "[EMAIL] hat geschrieben", "email"),
        (f"call {PHONE}.", "call [PHONE].", "phone"),
        ("US: +1 (555) 123-4567", "US: [PHONE]", "phone"),
        ("(555) 123-4567 after six", "[PHONE] after six", "phone"),
        ("Tel:555-123-4567", "Tel:[PHONE]", "phone"),
        ("555.123.4567 or 1 800 555 1234", "[PHONE] or [PHONE]", "phone"),
        ("office 020 7946 0958, mobile 07700 900123", "office [PHONE], mobile [PHONE]", "phone"),
        ("portable 06 12 34 56 78", "portable [PHONE]", "phone"),
        ("Berlin (030) 1234 5678", "Berlin [PHONE]", "phone"),
        (f"card {CARD} exp 12/25", "card [CARD] exp 12/25", "card"),
        ("4111-1111-1111-1111", "[CARD]", "card"),
        ("amex 3782 822463 10005 ok", "amex [CARD] ok", "card"),
        ("visa13 4222222222222", "visa13 [CARD]", "card"),
        ("order 1234 567 4111111111111111", "order 1234 567 [CARD]", "card"),
        (f"IBAN: {IBAN}.", "IBAN: [IBAN].", "iban"),
        ("GB82WEST12345698765432", "[IBAN]", "iban"),
        ("gb82 west 1234 5698 7654 32 please", "[IBAN] please", "iban"),
        ("BE68 5390 0754 7034 Done", "[IBAN] Done", "iban"),
    ],
)
def test_each_kind_is_found(text: str, expected: str, kind: str) -> None:
    assert redact(text, POLICY) == Redacted(expected, {kind: expected.count(placeholder(kind))})


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # fails Luhn
        "4111111111111112",
        "DE89 3704 0044 0532 0130 02",  # bad IBAN checksum (its digits fail Luhn too)
        "DE88370400440532013000",
        "XX99370400440532013000",  # check digits out of 02-98
        "on 2024-01-15, 15/01/2024 or 01.02.2024 at 10:30:45",
        "2024-01-15 2024-01-16",
        "v1.2.3 and 10.0.0.1 and 192.168.100.200",
        "1,000,000 and $1,234,567.89 and 1 000 000 and 1.000.000,00 EUR",
        "in 1999, 2024 and 2025; 42 of 12345",
        "3.14159265358979323 and 0.4111111111111111",
        "pages 100-1000, score 3-2, from 2019-2024",
        "ISBN 978-3-16-148410-0",
        "1 2 3 4 5 6 7 8 9 10 11 12 13",
        "+12% and +1,000,000",
        "5551234567 and 555-1234",  # bare digits and 7-digit numbers: precision first
        "01.02.2024 10 people",
        "a@b, a@b.c, user@localhost, @handle",
        "",
    ],
)
def test_numbers_that_are_not_personal_data_are_left_alone(text: str) -> None:
    assert redact(text, POLICY) == Redacted(text, {})


def test_counts_count_each_kind_and_never_hold_a_value() -> None:
    values = [IBAN, CARD, EMAIL, PHONE, "bob@example.org", "4012888888881881"]
    text = "Notes: " + " and ".join(values) + " — fin."
    result = redact(text, POLICY)
    assert result.counts == {"iban": 1, "card": 2, "email": 2, "phone": 1}
    assert (
        result.text
        == "Notes: [IBAN] and [CARD] and [EMAIL] and [PHONE] and [EMAIL] and [CARD] — fin."
    )
    shown = repr(result.counts)
    assert not any(value in shown or value in result.text for value in values)


def test_a_mistyped_ibans_digits_can_still_be_a_card() -> None:
    # a card may follow any word or number; these 18 digits happen to pass Luhn
    assert redact("DE89 3704 0044 0532 0130 01", POLICY) == Redacted("DE89 [CARD]", {"card": 1})


def test_an_iban_is_counted_once_not_as_a_card_or_phone() -> None:
    assert redact("GB29 NWBK 6016 1331 9268 19", POLICY) == Redacted("[IBAN]", {"iban": 1})
    assert redact("FR7630006000011234567890189", POLICY) == Redacted("[IBAN]", {"iban": 1})


def test_a_policy_runs_only_its_kinds() -> None:
    text = f"{EMAIL} {PHONE} {CARD}"
    assert redact(text, RedactionPolicy(kinds=("email",))) == Redacted(
        f"[EMAIL] {PHONE} {CARD}", {"email": 1}
    )
    assert redact(text, RedactionPolicy(kinds=("card", "phone"))).counts == {"card": 1, "phone": 1}
    assert redact(text, RedactionPolicy(kinds=())) == Redacted(text, {})


def test_surrounding_unicode_is_kept() -> None:
    text = "café ☕ — écris à bob@example.org 🙂\nsinon 📞 +33 1 23 45 67 89\u200b!"
    assert redact(text, POLICY).text == "café ☕ — écris à [EMAIL] 🙂\nsinon 📞 [PHONE]\u200b!"


# -- properties --------------------------------------------------------------------------------

PIECES = [
    CARD, "4111111111111111", "4111-1111-1111-1111", "3782 822463 10005", IBAN,
    "GB82WEST12345698765432", EMAIL, "x@y.co", PHONE, "+1 (555) 123-4567", "555-123-4567",
    "020 7946 0958", "2024-01-15", "10:30", "1.2.3", "1,000", "12", "0", "7", "4111", "DE89",
    "3.", ".5", "a1", " ", "-", ".", "/", ":", ",", "+", "(", ")", "@", "_", "é", "٣", "\n", "[",
    "]", "[CARD]",
]  # fmt: skip
texts = st.text() | st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=12).map(
    "".join
)


@settings(max_examples=400, deadline=None)
@given(texts, st.sampled_from([POLICY, RedactionPolicy(kinds=("card", "phone"))]))
def test_redaction_is_idempotent(text: str, policy: RedactionPolicy) -> None:
    once = redact(text, policy)
    assert redact(once.text, policy) == Redacted(once.text, {})


@st.composite
def cards(draw: st.DrawFn) -> str:
    """A Luhn-valid number of 13-19 digits, as one group or in fours by spaces or dashes."""
    length = draw(st.integers(13, 19))
    body = "".join(
        map(str, draw(st.lists(st.integers(0, 9), min_size=length - 1, max_size=length - 1)))
    )
    digits = body + luhn_check_digit(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i : i + 4] for i in range(0, length, 4)) if sep else digits


@settings(deadline=None)
@given(st.text(), cards(), st.text())
def test_a_valid_card_in_any_text_is_replaced(before: str, card: str, after: str) -> None:
    # the card detector alone: an IBAN-like token typed right before could claim the digits
    result = redact(f"{before} {card} {after}", RedactionPolicy(kinds=("card",)))
    assert card not in result.text
    assert result.counts["card"] >= 1


# -- custom patterns ---------------------------------------------------------------------------


def test_custom_patterns_run_after_the_builtins_and_spare_placeholders() -> None:
    policy = RedactionPolicy(
        custom=(
            CustomPattern(name="employee_id", pattern=r"\bEMP-\d{6}\b"),
            CustomPattern(name="shout", pattern=r"[A-Z]{4,}"),  # would match inside [EMAIL]
        )
    )
    text = "EMP-123456 wrote from bob@example.org: URGENT, EMP-1234567 is not one"
    assert redact(text, policy) == Redacted(
        "[EMPLOYEE_ID] wrote from [EMAIL]: [SHOUT], EMP-1234567 is not one",
        {"email": 1, "employee_id": 1, "shout": 1},
    )
    assert redact("[EMPLOYEE_ID] [EMAIL]", policy) == Redacted("[EMPLOYEE_ID] [EMAIL]", {})


def test_custom_anchors_see_the_whole_text() -> None:
    policy = RedactionPolicy(custom=(CustomPattern(name="head", pattern=r"^\w+"),))
    assert redact("bob@example.org secret", policy) == Redacted("[EMAIL] secret", {"email": 1})
    assert redact("secret ok", policy) == Redacted("[HEAD] ok", {"head": 1})


def test_custom_patterns_keep_text_whole_characters() -> None:
    policy = RedactionPolicy(custom=(CustomPattern(name="byte", pattern=r"\C"),))
    assert redact("é", policy) == Redacted("[BYTE]", {"byte": 1})
    policy = RedactionPolicy(custom=(CustomPattern(name="secret", pattern="s[ée]cr[èe]t"),))
    assert redact("un sécrèt \ud800 ici", policy) == Redacted(
        "un [SECRET] \ud800 ici", {"secret": 1}
    )


def test_custom_pattern_time_is_linear() -> None:
    policy = RedactionPolicy(custom=(CustomPattern(name="evil", pattern=r"(a+)+b"),))
    assert redact("a" * 100_000, policy) == Redacted("a" * 100_000, {})


def test_a_policy_round_trips_through_json() -> None:
    policy = RedactionPolicy(kinds=("email",), custom=(CustomPattern(name="acme", pattern="x"),))
    assert RedactionPolicy.model_validate_json(policy.model_dump_json()) == policy
    as_lists = {"kinds": ["email"], "custom": [{"name": "acme", "pattern": "x"}]}
    assert RedactionPolicy.model_validate(as_lists) == policy


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "acme", "pattern": "(unclosed"}, "not an RE2 expression"),
        ({"name": "acme", "pattern": r"(a)\1"}, "not an RE2 expression"),  # backreference
        ({"name": "acme", "pattern": "(?=lookahead)"}, "not an RE2 expression"),
        ({"name": "acme", "pattern": "x" * 1001}, "at most 1000"),
        ({"name": "acme", "pattern": ""}, "at least 1"),
        ({"name": "acme", "pattern": "a*"}, "empty string"),
        ({"name": "acme", "pattern": "x|"}, "empty string"),
        ({"name": "acme", "pattern": r"\b"}, "empty string"),
        ({"name": "acme", "pattern": "(?m)$"}, "empty string"),
        ({"name": "email", "pattern": "x"}, "built-in kind"),
        ({"name": "Acme", "pattern": "x"}, "lowercase"),
        ({"name": "1acme", "pattern": "x"}, "lowercase"),
        ({"name": "a" * 33, "pattern": "x"}, "lowercase"),
        ({"name": "acme", "pattern": "x", "flags": "i"}, "Extra inputs"),
        ({"name": "acme", "pattern": b"x"}, "valid string"),
    ],
)
def test_bad_custom_patterns_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CustomPattern.model_validate(fields)


def test_a_long_valid_pattern_is_accepted() -> None:
    pattern = "(?:" + "|".join(f"k{i:04d}" for i in range(166)) + ")"
    assert len(pattern) <= 1000
    assert CustomPattern(name="keys", pattern=pattern).pattern == pattern


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kinds": ("email", "ssn")}, "unknown kinds"),
        ({"kinds": ("email", "email")}, "named twice"),
        ({"kinds": ["email", 1]}, "valid string"),  # a list is taken, its values stay strict
        (
            {
                "custom": (
                    CustomPattern(name="a", pattern="x"),
                    CustomPattern(name="a", pattern="y"),
                )
            },
            "same name",
        ),
        (
            {"custom": tuple(CustomPattern(name=f"p{i}", pattern="x") for i in range(33))},
            "at most 32",
        ),
    ],
)
def test_bad_policies_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedactionPolicy.model_validate(fields)


def test_policies_are_frozen() -> None:
    with pytest.raises(ValidationError):
        POLICY.kinds = ()  # type: ignore[misc]


# -- hostile input -----------------------------------------------------------------------------

HOSTILE = {
    "digits": "1" * 100_000,
    "digits and dashes": "1-" * 50_000,
    "digits and spaces": "1 " * 50_000,
    "card-like groups": "4111 " * 20_000,
    "at signs and dots": "@." * 50_000,
    "word at word": "a@" * 50_000,
    "dotted words": "a." * 50_000,
    "one long local part": "a" * 100_000 + "@",
    "long labels": "x@" + "a." * 50_000,
    "local parts and domains": ("a" * 64 + "@" + "b." * 200) * 215,
    "iban-like tokens": "AB12 " * 20_000,
    "plus signs": "+1" * 50_000,
    "parentheses": "(555) " * 16_000,
    "trunk zeros": "0 " * 50_000,
    "mixed": "0123456789-. ()+/:,@aZ_é" * 4_000,
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_completes(text: str) -> None:
    policy = RedactionPolicy(custom=(CustomPattern(name="evil", pattern=r"(\d+-?)+\.$"),))
    assert len(redact(text, policy).text) <= len(text) + 10 * text.count("@")
    assert redact(redact(text, POLICY).text, POLICY).counts == {}
