"""Text hygiene: normalisation, personal-data scan and redaction, and the per-text style checks.

`normalize` is what `tuneforge data prepare` applies to every piece of text: Unicode NFC, curly
quotes to straight ones, odd spaces to plain spaces, zero-width characters removed, CRLF to LF,
leading and trailing whitespace trimmed. Code indentation and line breaks inside a text are kept.

`find_personal_data` looks for emails, phone numbers, credit-card numbers (Luhn-checked), IBANs
(mod-97-checked), IP addresses and API keys or secrets; `redact` replaces each with a typed
placeholder such as `[EMAIL]`.
"""

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

SMART_QUOTES = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
}
# Spaces that look like a space but are not U+0020; tabs stay (they can be meaningful in code).
ODD_SPACES = {
    c: " " for c in "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"
}
ZERO_WIDTH = {c: "" for c in "\u200b\u2060\ufeff\u00ad"}  # not U+200C/U+200D: they shape scripts and emoji
NORMALIZE_TABLE = str.maketrans({**SMART_QUOTES, **ODD_SPACES, **ZERO_WIDTH})

SMART_QUOTE_RE = re.compile("[" + "".join(SMART_QUOTES) + "]")
ODD_WHITESPACE_RE = re.compile("[" + "".join(ODD_SPACES) + "".join(ZERO_WIDTH) + "\r\t]")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = text.translate(NORMALIZE_TABLE).replace("\r\n", "\n").replace("\r", "\n")
    return text.strip()


def count_smart_quotes(text: str) -> int:
    return len(SMART_QUOTE_RE.findall(text))


def describe_odd_whitespace(text: str) -> str | None:
    found = sorted({f"U+{ord(c):04X}" for c in ODD_WHITESPACE_RE.findall(text)})
    return ", ".join(found) if found else None


def is_untrimmed(text: str) -> bool:
    return bool(text) and text != text.strip()


UPPER_RE = re.compile(r"[A-Z\u00c0-\u00de]")
LOWER_RE = re.compile(r"[a-z\u00df-\u00ff]")
# Cheap pre-filter: every pattern below needs one of these; most prose has none and is skipped.
DIGIT_RUN_RE = re.compile(r"\d[ .()-]{0,2}\d[ .()-]{0,2}\d[ .()-]{0,2}\d")  # cards, IBANs, phones need 4+ close digits
SECRET_HINT_RE = re.compile(r"-----BEGIN|AKIA|ASIA|gh[pousr]_|xox|sk-|AIza|hf_|eyJ|(?i:pass|secret|token|api.?key)")
MAYBE_PERSONAL_RE = re.compile(r"[0-9@]|" + SECRET_HINT_RE.pattern)


def is_mostly_uppercase(text: str, min_letters: int = 20, share: float = 0.7) -> bool:
    # Latin letters only, counted by the regex engine: a per-character Python loop is too slow here.
    upper = len(UPPER_RE.findall(text))
    if upper < share * min_letters:  # the common case, decided without counting lowercase letters
        return False
    letters = upper + len(LOWER_RE.findall(text))
    return letters >= min_letters and upper >= share * letters


# ------------------------------------------------------------------------------- personal data
@dataclass(frozen=True, slots=True)
class PersonalData:
    kind: str  # email | phone | credit_card | iban | ip_address | secret
    start: int
    end: int
    text: str

    @property
    def placeholder(self) -> str:
        return f"[{self.kind.upper()}]"

    def masked(self) -> str:
        """Enough of the match to find it in the file, not enough to leak it into a report."""
        return self.text[:3] + "***" if len(self.text) > 6 else "***"


EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Phone numbers need separators or a leading +: bare digit runs are more often ids than phones.
PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?\(\d{1,4}\)[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,3}(?![\w-])"  # (555) 123-4567
    r"|(?<![\w+])(?:\+\d{1,3}[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?![\w-])"  # 555-123-4567, +44 20 7946 0958
    r"|(?<![\w+])\+\d{8,14}\b"  # +14155552671
)
# Dates look like phone numbers to the pattern above: 2024-01-15, 2024.01.15 10:30.
DATE_RE = re.compile(r"(?:19|20)\d{2}[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])(?!\d)")
CARD_RE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
IPV4_RE = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
# Any run of hex groups and colons; ipaddress decides whether it really is an IPv6 address.
IPV6_RE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
SECRET_RE = re.compile(
    r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Anthropic style keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"  # GitHub tokens
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google API keys
    r"|\bhf_[A-Za-z0-9]{30,}\b"  # Hugging Face tokens
    r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWTs
    r"|-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"
    r"|(?i:\b(?:api[_-]?key|secret|access[_-]?token|password|passwd)\b\s*[:=]\s*[\"']?)[^\s\"']{8,}"
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ip_valid(candidate: str) -> bool:
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    # 0.0.0.0, 127.0.0.1 and friends are configuration, not somebody's address.
    return not (address.is_loopback or address.is_unspecified)


def _card_valid(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _phone_valid(candidate: str) -> bool:
    return 8 <= sum(c.isdigit() for c in candidate) <= 15 and not DATE_RE.match(candidate)


def find_personal_data(text: str) -> list[PersonalData]:
    """Every match, in text order, overlapping matches resolved in favour of the earlier, longer one."""
    if not MAYBE_PERSONAL_RE.search(text):
        return []
    found: list[PersonalData] = []
    # Each pattern runs only where its cheapest necessary character is present.
    patterns = [("secret", SECRET_RE, None)] if SECRET_HINT_RE.search(text) else []
    if "@" in text:
        patterns.append(("email", EMAIL_RE, None))
    if DIGIT_RUN_RE.search(text):
        patterns += [
            ("iban", IBAN_RE, iban_valid),
            ("credit_card", CARD_RE, _card_valid),
            ("phone", PHONE_RE, _phone_valid),
        ]
    if "." in text:
        patterns.append(("ip_address", IPV4_RE, _ip_valid))
    if "::" in text or text.count(":") >= 2:
        patterns.append(("ip_address", IPV6_RE, _ip_valid))
    for kind, pattern, valid in patterns:
        for match in pattern.finditer(text):
            if valid is None or valid(match.group()):
                found.append(PersonalData(kind, match.start(), match.end(), match.group()))
    found.sort(key=lambda p: (p.start, -(p.end - p.start)))
    kept: list[PersonalData] = []
    for item in found:
        if not kept or item.start >= kept[-1].end:
            kept.append(item)
    return kept


def redact(text: str) -> tuple[str, list[PersonalData]]:
    found = find_personal_data(text)
    if not found:
        return text, found
    pieces, cursor = [], 0
    for item in found:
        pieces.append(text[cursor : item.start])
        pieces.append(item.placeholder)
        cursor = item.end
    pieces.append(text[cursor:])
    return "".join(pieces), found


# ----------------------------------------------------------------------------- unsafe content
# A deliberately small phrase list, one per category: it flags text that reads like harmful
# instructions, leaked-credential talk or abuse, for a person to look at. It is a tripwire, not a
# classifier: it misses paraphrases, and a refusal that repeats the request ("I won't explain how to
# make a bomb") is flagged too. Phrases are matched case-insensitively on word boundaries, with any
# run of whitespace between words.
UNSAFE_PHRASES: dict[str, tuple[str, ...]] = {
    "violence": (
        "make a bomb",
        "build a bomb",
        "pipe bomb",
        "molotov cocktail",
        "homemade explosive",
        "detonator",
        "untraceable gun",
        "ghost gun",
        "poison someone",
        "how to kill",
        "hurt someone without",
        "get away with murder",
    ),
    "self_harm": (
        "kill myself",
        "kill yourself",
        "end my life",
        "end your life",
        "painless way to die",
        "how to overdose",
        "lethal dose",
        "cut myself",
        "suicide method",
    ),
    "credentials": (
        "steal passwords",
        "steal their password",
        "crack the password",
        "bypass authentication",
        "bypass the login",
        "keylogger",
        "phishing email",
        "credential stuffing",
        "password dump",
        "default admin password",
    ),
    "abuse": (
        "you are worthless",
        "you're worthless",
        "you are stupid",
        "you're stupid",
        "you are an idiot",
        "you're an idiot",
        "you are pathetic",
        "nobody likes you",
        "shut up, idiot",
    ),
}
UNSAFE_CATEGORIES = tuple(UNSAFE_PHRASES)
# Cheap pre-filter, as for personal data: every phrase above contains one of these lowercase words
# (a test keeps it so), and most text contains none, so the phrase regex (5 MB/s) rarely runs.
UNSAFE_HINTS = (
    "bomb",
    "molotov",
    "explosive",
    "detonator",
    "gun",
    "poison",
    "kill",
    "hurt",
    "murder",
    "life",
    "die",
    "overdose",
    "lethal",
    "myself",
    "suicide",
    "password",
    "authentication",
    "login",
    "keylogger",
    "phishing",
    "credential",
    "worthless",
    "stupid",
    "idiot",
    "pathetic",
    "nobody",
)
UNSAFE_RE = re.compile(
    "|".join(
        f"(?P<{category}>"
        + "|".join(r"\b" + re.escape(phrase).replace(r"\ ", r"\s+") + r"\b" for phrase in phrases)
        + ")"
        for category, phrases in UNSAFE_PHRASES.items()
    ),
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class UnsafeContent:
    category: str  # one of UNSAFE_CATEGORIES
    start: int
    end: int
    text: str


def find_unsafe_content(text: str) -> list[UnsafeContent]:
    """Every phrase of `UNSAFE_PHRASES` in the text, in text order."""
    lowered = text.lower()
    if not any(hint in lowered for hint in UNSAFE_HINTS):
        return []
    return [
        UnsafeContent(match.lastgroup, match.start(), match.end(), match.group()) for match in UNSAFE_RE.finditer(text)
    ]
