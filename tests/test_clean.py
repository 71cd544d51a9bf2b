"""Unit tests for tuneforge.data.clean: normalisation, personal-data scan, redaction, style checks."""

import pytest

from tuneforge.data.clean import (
    SMART_QUOTES,
    count_smart_quotes,
    describe_odd_whitespace,
    find_personal_data,
    iban_valid,
    is_mostly_uppercase,
    is_untrimmed,
    luhn_valid,
    normalize,
    redact,
)

# Fake secrets are assembled at run time so this file never contains a key-shaped literal.
OPENAI_KEY = "sk-" + "a1B2" * 10
AWS_KEY_ID = "AKIA" + "Z7QX" * 4
GITHUB_TOKEN = "ghp_" + "x9Y8" * 9
PRIVATE_KEY_HEADER = "-----BEGIN " + "RSA PRIVATE" + " KEY-----"
PASSWORD_ASSIGNMENT = "password" + " = " + "hunter2" * 2


def kinds(text: str) -> list[tuple[str, str]]:
    return [(p.kind, p.text) for p in find_personal_data(text)]


def assert_single_finding(text: str, value: str, kind: str) -> None:
    found = find_personal_data(text)
    assert [(p.kind, p.text) for p in found] == [(kind, value)]
    start = text.index(value)
    assert (found[0].start, found[0].end) == (start, start + len(value))
    assert text[found[0].start : found[0].end] == value


# ------------------------------------------------------------------------------------ normalize
@pytest.mark.parametrize("curly", sorted(SMART_QUOTES))
def test_normalize_turns_every_smart_quote_straight(curly):
    assert normalize(f"a{curly}b") == f"a{SMART_QUOTES[curly]}b"
    assert SMART_QUOTES[curly] in ("'", '"')


def test_normalize_turns_typical_curly_quoted_sentence_straight():
    assert normalize("\u201cIt\u2019s fine,\u201d she said.") == '"It\'s fine," she said.'


@pytest.mark.parametrize("space", ["\u00a0", "\u2002", "\u2009", "\u202f", "\u3000"])
def test_normalize_turns_odd_spaces_into_plain_space(space):
    assert normalize(f"one{space}two") == "one two"


@pytest.mark.parametrize("invisible", ["\u200b", "\ufeff"])
def test_normalize_removes_zero_width_space_and_bom(invisible):
    assert normalize(f"{invisible}wo{invisible}rd") == "word"


def test_normalize_keeps_zero_width_joiner_inside_emoji():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert normalize(f"family {family}") == f"family {family}"
    assert normalize(family).count("\u200d") == 2


def test_normalize_converts_crlf_and_cr_to_lf():
    assert normalize("a\r\nb\rc\nd") == "a\nb\nc\nd"


def test_normalize_composes_to_nfc():
    assert normalize("caf" + "e\u0301") == "caf\u00e9"
    assert len(normalize("e\u0301")) == 1


def test_normalize_trims_ends_but_keeps_inner_newlines_and_indentation():
    code = "\n\n  Here is code:\n\ndef f(x):\n    if x:\n\treturn 1\n   \n"
    assert normalize(code) == "Here is code:\n\ndef f(x):\n    if x:\n\treturn 1"


def test_normalize_leaves_clean_text_unchanged():
    text = "Plain ASCII text.\nSecond line with 'quotes' and \"more\"."
    assert normalize(text) == text


# ---------------------------------------------------------------------------- personal data: kinds
def test_finds_email_with_span():
    assert_single_finding("Write to bob.smith+tf@example.co.uk today.", "bob.smith+tf@example.co.uk", "email")


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "555-123-4567",
        "+14155552671",
        "555.123.4567",
        "+1 415 555 2671",
        "(555) 123-4567",
        "+1 (555) 123-4567",
    ],
)
def test_finds_phone_numbers_in_real_formats(phone):
    assert_single_finding(f"Call me on {phone} tomorrow.", phone, "phone")


@pytest.mark.parametrize("card", ["4111 1111 1111 1111", "5500-0000-0000-0004", "4111111111111111"])
def test_finds_luhn_valid_credit_card(card):
    assert_single_finding(f"Card: {card}, exp 12/29", card, "credit_card")


def test_sixteen_digit_number_failing_luhn_is_not_a_card():
    assert not luhn_valid("4111111111111112")
    assert kinds("Card: 4111 1111 1111 1112 end") == []
    assert kinds("ref 4111111111111112") == []


@pytest.mark.parametrize("iban", ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"])
def test_finds_mod97_valid_iban(iban):
    assert_single_finding(f"Pay to {iban} please.", iban, "iban")


@pytest.mark.parametrize("iban", ["GB83 WEST 1234 5698 7654 32", "DE88370400440532013000"])
def test_iban_with_wrong_check_digits_is_not_an_iban(iban):
    assert not iban_valid(iban)
    assert "iban" not in {p.kind for p in find_personal_data(f"Pay to {iban} please.")}


@pytest.mark.parametrize(
    "address",
    [
        "192.168.1.20",
        "8.8.8.8",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "fe80::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:c000:280",
    ],
)
def test_finds_ip_addresses(address):
    assert_single_finding(f"Server at {address} is down.", address, "ip_address")


@pytest.mark.parametrize("text", ["ping 127.0.0.1", "bind ::1", "listen 0.0.0.0", "bad 999.1.1.1", "version 1.2.3"])
def test_loopback_invalid_and_version_strings_are_not_ip_addresses(text):
    assert kinds(text) == []


@pytest.mark.parametrize("secret", [OPENAI_KEY, AWS_KEY_ID, GITHUB_TOKEN, PRIVATE_KEY_HEADER, PASSWORD_ASSIGNMENT])
def test_finds_secrets(secret):
    assert_single_finding(f"config: {secret}\nmore", secret, "secret")


@pytest.mark.parametrize("secret", ["AKIA" + "QWERTYUIOPASDFGH", "password" + ": " + "correcthorsebattery"])
def test_finds_secrets_without_any_digit(secret):
    assert kinds(f"config {secret}") == [("secret", secret)]


def test_findings_come_in_text_order_with_kinds():
    text = f"Mail a@b.io, call 555-123-4567, key {OPENAI_KEY}, host 8.8.8.8."
    assert kinds(text) == [
        ("email", "a@b.io"),
        ("phone", "555-123-4567"),
        ("secret", OPENAI_KEY),
        ("ip_address", "8.8.8.8"),
    ]


# ------------------------------------------------------------------------ personal data: negatives
@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog, then naps for 20 minutes.",
        "Please see invoice INV-2041 for details.",
        "It costs $1,299.00 plus tax.",
        "Room 42, floor 7, ticket 1234.",
        "Dated 15/01/2024 and Jan 15, 2024.",
        "Between 2020 and 2024 sales grew 12%.",
        "The meeting is on 2024-01-15 at noon.",
        "Logged at 2024-01-15 10:30:00 by the build 2024.01.15.1.",
    ],
)
def test_ordinary_text_is_not_flagged(text):
    assert kinds(text) == []


# -------------------------------------------------------------------------------------- redact
def test_redact_replaces_each_kind_with_typed_placeholder():
    text = (
        f"e: jo@example.com p: +44 20 7946 0958 c: 4111 1111 1111 1111 "
        f"i: DE89370400440532013000 ip: 192.168.1.20 s: {GITHUB_TOKEN} end"
    )
    redacted, found = redact(text)
    assert redacted == "e: [EMAIL] p: [PHONE] c: [CREDIT_CARD] i: [IBAN] ip: [IP_ADDRESS] s: [SECRET] end"
    assert [p.kind for p in found] == ["email", "phone", "credit_card", "iban", "ip_address", "secret"]
    assert [text[p.start : p.end] for p in found] == [p.text for p in found]


def test_redact_returns_text_without_personal_data_unchanged():
    text = "Nothing personal here: 3 apples and 4 pears."
    assert redact(text) == (text, [])


def test_masked_shows_only_a_prefix():
    (finding,) = find_personal_data(f"key {OPENAI_KEY}")
    assert finding.masked() == "sk-***"
    assert finding.placeholder == "[SECRET]"


# ----------------------------------------------------------------------------- check helpers
@pytest.mark.parametrize(
    "digits,valid",
    [
        ("4111111111111111", True),
        ("5500000000000004", True),
        ("79927398713", True),
        ("4111111111111112", False),
        ("79927398710", False),
    ],
)
def test_luhn_valid(digits, valid):
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    "iban,valid",
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("DE89370400440532013000", True),
        ("GB82WEST12345698765432", True),
        ("GB83 WEST 1234 5698 7654 32", False),
        ("DE89370400440532013001", False),
        ("DE89 3704", False),
    ],
)
def test_iban_valid(iban, valid):
    assert iban_valid(iban) is valid


def test_count_smart_quotes_counts_each_curly_quote():
    assert count_smart_quotes("\u201cIt\u2019s\u201d \u00abok\u00bb") == 5
    assert count_smart_quotes("straight 'quotes' and \"doubles\"") == 0


def test_describe_odd_whitespace_lists_code_points_sorted_and_unique():
    assert describe_odd_whitespace("a\u00a0b\u00a0c\u200bd\r\n\te") == "U+0009, U+000D, U+00A0, U+200B"
    assert describe_odd_whitespace("plain text\nwith newline") is None


def test_is_untrimmed():
    assert is_untrimmed(" leading") and is_untrimmed("trailing\n") and is_untrimmed("\ttab")
    assert not is_untrimmed("trimmed") and not is_untrimmed("")


def test_is_mostly_uppercase_ignores_short_shouting_and_flags_long_caps():
    assert not is_mostly_uppercase("STOP RIGHT NOW")  # 12 letters: under the 20-letter minimum
    assert is_mostly_uppercase("THIS WHOLE SENTENCE IS WRITTEN IN CAPITAL LETTERS FOR NO REASON.")
    assert not is_mostly_uppercase("A normal sentence that mentions NASA, the FBI and the USA.")
