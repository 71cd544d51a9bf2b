"""Findings: what is wrong with a data file, where (line, field) and how to fix it.

Every finding has a stable `code` from `CATALOG`, so scripts can match on it and the docs can list
it (`tuneforge data codes`). `FindingLog` keeps the first few findings of each code and counts the
rest, so checking a multi-gigabyte broken file stays in constant memory.
"""

from collections import Counter
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field  # Finding has a field named "field"
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Code:
    severity: Severity
    title: str
    fix: str


CATALOG: dict[str, Code] = {
    # Reading the file.
    "file_empty": Code("error", "the file has no examples", "Add examples, one JSON object per line."),
    "not_utf8": Code(
        "error", "the line is not valid UTF-8", "Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
    ),
    "invalid_json": Code(
        "error",
        "the line is not valid JSON",
        "Each line must be one complete JSON object; check quotes, commas and brackets.",
    ),
    "not_object": Code(
        "error",
        "the line is JSON but not an object",
        "Wrap each example in {...} with the keys of one supported format.",
    ),
    "blank_line": Code("info", "blank line skipped", "Remove blank lines between examples."),
    # Shape of one example.
    "unknown_format": Code(
        "error",
        "no supported format matches the keys",
        "Use one of: messages; prompt/completion; prompt/response; instruction/input/output; "
        "input/preferred_output/non_preferred_output; prompt/chosen/rejected; text.",
    ),
    "mixed_formats": Code(
        "error", "the file mixes example kinds", "Keep chat, preference and raw-text examples in separate files."
    ),
    "mixed_source_formats": Code(
        "warning",
        "the file mixes formats of the same kind",
        "They are all converted to chat; check this mix is intended.",
    ),
    "missing_key": Code("error", "a required key is missing", "Add the key named in the field column."),
    "unknown_key": Code(
        "warning", "a key is not part of the format and is ignored", "Remove it, or rename it if it is a misspelt key."
    ),
    "wrong_type": Code("error", "a value has the wrong type", "Use the type named in the message."),
    "unknown_role": Code("error", "a message has an unknown role", "Use system, user, assistant or tool."),
    "empty_content": Code("error", "a message or field is empty", "Write the text, or remove the message."),
    "no_assistant_turn": Code(
        "error", "no assistant message to learn from", "Add the assistant's reply as the last message."
    ),
    "nothing_to_train": Code(
        "error",
        "every assistant message has weight 0",
        "Set weight 1 (or remove weight) on the replies the model should learn.",
    ),
    "invalid_weight": Code("error", "weight must be 0 or 1", "Use 0 (context only) or 1 (learn this reply)."),
    "weight_not_on_assistant": Code(
        "warning",
        "weight on a non-assistant message is ignored",
        "Only assistant messages are trained on; remove the weight.",
    ),
    "bad_turn_order": Code(
        "warning",
        "the turns are in an unusual order",
        "Start with an optional system message, then alternate user and assistant.",
    ),
    "orphan_tool_message": Code(
        "error",
        "a tool message answers no tool call",
        "Put an assistant message with tool_calls before each tool message.",
    ),
    "invalid_tool_call": Code(
        "error",
        "a tool call is malformed",
        'Use {"id", "type": "function", "function": {"name", "arguments": "<JSON string>"}}.',
    ),
    "identical_preference": Code(
        "error",
        "the preferred and non-preferred outputs are identical",
        "Make the rejected answer differ from the chosen one.",
    ),
    "trailing_messages": Code(
        "info",
        "messages after the last assistant reply are not trained on",
        "End each example with the assistant reply.",
    ),
    # The dataset as a whole.
    "too_few_examples": Code(
        "error",
        "fewer than 10 examples",
        "Fine-tuning needs at least 10 examples; 50-100 good ones is a sensible start.",
    ),
    "few_examples": Code("warning", "fewer than 100 examples", "Results improve markedly with 100+ varied examples."),
    "duplicate": Code(
        "warning", "exact duplicate of an earlier example", "Remove it, or let `tuneforge data prepare` de-duplicate."
    ),
    "too_long": Code(
        "warning",
        "longer than the model's context; it will be truncated",
        "Shorten the example or split the conversation.",
    ),
    "smart_quotes": Code("warning", "curly quotes", "`tuneforge data prepare` converts them to straight quotes."),
    "odd_whitespace": Code(
        "warning",
        "invisible or unusual whitespace (non-breaking, zero-width, tabs, CR)",
        "`tuneforge data prepare` normalises it.",
    ),
    "untrimmed_whitespace": Code("info", "leading or trailing whitespace", "`tuneforge data prepare` trims it."),
    "mostly_uppercase": Code(
        "warning", "text is mostly uppercase", "Use normal casing unless shouting is the intended style."
    ),
    "identical_prompts": Code(
        "warning",
        "every example has the same prompt",
        "Vary the prompts; the model cannot learn a mapping from one input.",
    ),
    "identical_completions": Code(
        "warning", "every example has the same completion", "Vary the answers; the model will learn to say only this."
    ),
    "classification_like": Code(
        "info",
        "few distinct completions: looks like classification",
        "Splits will be stratified by label; evaluate with accuracy/F1.",
    ),
    "label_imbalance": Code(
        "warning", "the labels are imbalanced", "Add examples of the rare labels or down-sample the common ones."
    ),
    "personal_data": Code(
        "warning", "personal data or a secret found", "Remove it, or run `tuneforge data prepare --redact-pii`."
    ),
    "unsafe_content": Code(
        "warning",
        "text reads like harmful instructions, credential theft or abuse",
        "Check the example is meant to be there (e.g. as a refusal to learn); remove it otherwise.",
    ),
    "no_tokenizer": Code(
        "info", "no tokenizer: token statistics skipped", "Pass --model with a model this machine has."
    ),
}


@dataclass(slots=True)
class Finding:
    code: str
    message: str
    line: int | None = None
    field: str | None = None
    fix: str | None = None
    severity: Severity | None = None  # from the catalog unless a check overrides it
    raw: str | None = dataclass_field(
        default=None, repr=False
    )  # an unreadable line's text, so `prepare` can set it aside

    def __post_init__(self):
        entry = CATALOG[self.code]  # a KeyError here is a bug: every code must be catalogued
        if self.severity is None:
            self.severity = entry.severity
        if self.fix is None:
            self.fix = entry.fix

    def as_dict(self) -> dict:
        values = asdict(self)
        del values["raw"]
        return values


class FindingLog:
    """Keeps the first `keep_per_code` findings of each code and counts all of them."""

    def __init__(self, keep_per_code: int = 20):
        self.keep_per_code = keep_per_code
        self.kept: dict[str, list[Finding]] = {}
        self.counts: Counter[str] = Counter()
        self.severity_counts: Counter[str] = Counter()

    def add(self, finding: Finding) -> None:
        self.counts[finding.code] += 1
        self.severity_counts[finding.severity] += 1
        kept = self.kept.setdefault(finding.code, [])
        if len(kept) < self.keep_per_code:
            kept.append(finding)

    def add_counted(self, code: str, total: int, first: list[Finding]) -> None:
        """`total` findings of one code, of which only `first` were built (the rest are only counted)."""
        for finding in first:
            self.add(finding)
        extra = total - len(first)
        if extra > 0:
            self.counts[code] += extra
            self.severity_counts[CATALOG[code].severity] += extra

    def extend(self, findings) -> None:
        for finding in findings:
            self.add(finding)

    @property
    def errors(self) -> int:
        return self.severity_counts["error"]

    @property
    def warnings(self) -> int:
        return self.severity_counts["warning"]

    def findings(self) -> list[Finding]:
        """Kept findings, most severe first, then by line."""
        every = [f for kept in self.kept.values() for f in kept]
        return sorted(every, key=lambda f: (SEVERITY_ORDER[f.severity], f.line or 0, f.code))

    def summary(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
