"""`tuneforge data check FILE`: every problem in a data file, with line, field and fix, in one pass.

The file is streamed record by record, in constant memory: exact duplicates are found through
`dedupe.DuplicateIndex` (which spills to disk past half a million examples), and the rest are
bounded tallies (token-length histogram, up to 50 distinct completions for label statistics,
the first 20 findings of each code). Tokenisation, when a model is given, runs in batches through
the model's real tokenizer and chat template (see `tokenize.py`).
"""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tuneforge.data import clean
from tuneforge.data.dedupe import DuplicateIndex
from tuneforge.data.examples import Conversation, Example, ParsedExample, Preference, to_openai_record
from tuneforge.data.findings import Finding, FindingLog
from tuneforge.data.formats import parse_record
from tuneforge.data.reader import Record, file_kind, iter_records, open_data_file
from tuneforge.data.tokenize import ChatTokenizer, conversations_for
from tuneforge.hardware import auto_epochs

MIN_EXAMPLES, RECOMMENDED_EXAMPLES = 10, 100
LABEL_LIMIT = 50  # more distinct completions than this: not a classification task
LINES_SHOWN = 5  # lines named in a finding about several lines (the minority formats of a mixed file)
TOKENIZE_BATCH = 512


@dataclass
class Histogram:
    """Exact min/mean/p95/max of small integers in memory bounded by the largest value, not the count."""

    counts: Counter = field(default_factory=Counter)

    def add(self, value: int) -> None:
        self.counts[value] += 1

    def summary(self) -> dict | None:
        total = sum(self.counts.values())
        if not total:
            return None
        values = sorted(self.counts)
        seen, p95 = 0, values[-1]
        for value in values:
            seen += self.counts[value]
            if seen >= 0.95 * total:
                p95 = value
                break
        mean = sum(v * c for v, c in self.counts.items()) / total
        return {"min": values[0], "mean": round(mean, 1), "p95": p95, "max": values[-1]}

    def bins(self, count: int = 20) -> list[dict]:
        """Equal-width bins from the smallest value to the largest: [{"from", "to", "count"}], `to`
        exclusive but for the last bin. Empty when nothing was added."""
        if not self.counts:
            return []
        low, high = min(self.counts), max(self.counts)
        width = max(1, -(-(high - low + 1) // count))
        edges = list(range(low, high + 1, width))
        totals = [0] * len(edges)
        for value, seen in self.counts.items():
            totals[(value - low) // width] += seen
        return [{"from": edge, "to": min(edge + width, high + 1), "count": n} for edge, n in zip(edges, totals)]


@dataclass
class CheckReport:
    path: str
    format: str | None  # the detected format, "mixed" when the file mixes them
    kind: str | None  # conversation | preference | text
    records: int
    examples: int  # records that parsed into a usable example
    findings: FindingLog
    stats: dict
    labels: dict[str, int] | None  # label counts when the data is classification-like

    @property
    def ok(self) -> bool:
        return self.findings.errors == 0

    def as_json(self) -> dict:
        return {
            "ok": self.ok,
            "path": self.path,
            "format": self.format,
            "kind": self.kind,
            "records": self.records,
            "examples": self.examples,
            "errors": self.findings.errors,
            "warnings": self.findings.warnings,
            "finding_counts": self.findings.summary(),
            "findings": [f.as_dict() for f in self.findings.findings()],
            "labels": self.labels,
            "stats": self.stats,
        }


def content_hash(example) -> int:
    canonical = json.dumps(to_openai_record(example), sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=8).digest(), "little")


def prompt_and_completion(example) -> tuple[str | None, str | None]:
    """The prompt (everything before the answer) and the answer, for sameness and label statistics."""
    if isinstance(example, Conversation):
        prompt, reply = example.split_at_last_reply()
        return json.dumps([(m.role, m.content) for m in prompt], ensure_ascii=False), reply.content
    if isinstance(example, Preference):
        return json.dumps([(m.role, m.content) for m in example.prompt], ensure_ascii=False), example.chosen[
            -1
        ].content
    return None, None


class DatasetChecker:
    def __init__(
        self,
        tokenizer: ChatTokenizer | None = None,
        context_length: int | None = None,
        parameters: int | None = None,
        keep_per_code: int = 20,
    ):
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.parameters = parameters
        self.log = FindingLog(keep_per_code)
        self.formats: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.first_line_of_kind: dict[str, int] = {}
        self.first_lines_of_format: dict[str, list[int]] = {}  # up to LINES_SHOWN lines per format
        self.records = self.examples = 0
        self.duplicates = DuplicateIndex()
        self.messages = Histogram()
        self.tokens = Histogram()
        self.total_tokens = self.trainable_tokens = 0.0
        self.truncated = 0
        self.pending: list[tuple[int, object]] = []
        self.prompts, self.completions = set(), set()  # at most 2 each: only "all the same?" is asked
        self.labels: Counter[str] | None = Counter()
        self.pii: Counter[str] = Counter()

    # ------------------------------------------------------------------------------ per record
    def add(self, item: Record | Finding) -> Example | None:
        """Check one record; return its canonical example when it is usable."""
        if isinstance(item, Finding):
            self.log.add(item)
            if item.code != "blank_line":
                self.records += 1
            return None
        self.records += 1
        fmt, parsed, findings = parse_record(item.value, item.line)
        self.log.extend(findings)
        if fmt is not None:
            self.formats[fmt.name] += 1
            self.kinds[fmt.kind] += 1
            self.first_line_of_kind.setdefault(fmt.kind, item.line)
            lines = self.first_lines_of_format.setdefault(fmt.name, [])
            if len(lines) < LINES_SHOWN:
                lines.append(item.line)
        if parsed is None:
            return None
        self.examples += 1
        self._check_texts(parsed, item.line)
        example = parsed.example
        self.duplicates.add(content_hash(example), item.line)
        if isinstance(example, Conversation):
            self.messages.add(len(example.messages))
        elif isinstance(example, Preference):
            self.messages.add(len(example.prompt) + len(example.chosen))
        self._track_sameness(example)
        if self.tokenizer is not None:
            self.pending.append((item.line, example))
            if len(self.pending) >= TOKENIZE_BATCH:
                self._flush_tokens()
        return example

    def _check_texts(self, parsed: ParsedExample, line: int) -> None:
        for text_field in parsed.fields:
            text, path = text_field.text, text_field.path
            if quotes := clean.count_smart_quotes(text):
                self.log.add(Finding("smart_quotes", f"{quotes} curly quote(s)", line=line, field=path))
            if odd := clean.describe_odd_whitespace(text):
                self.log.add(Finding("odd_whitespace", f"contains {odd}", line=line, field=path))
            if clean.is_untrimmed(text) and text.strip():
                self.log.add(Finding("untrimmed_whitespace", "leading or trailing whitespace", line=line, field=path))
            if clean.is_mostly_uppercase(text):
                self.log.add(Finding("mostly_uppercase", "most letters are uppercase", line=line, field=path))
            for item in clean.find_personal_data(text):
                self.pii[item.kind] += 1
                self.log.add(
                    Finding(
                        "personal_data",
                        f"{item.kind.replace('_', ' ')} ({item.masked()}) at characters {item.start}-{item.end}",
                        line=line,
                        field=path,
                    )
                )
            for flag in clean.find_unsafe_content(text):
                self.log.add(
                    Finding(
                        "unsafe_content",
                        f'{flag.category.replace("_", " ")}: "{flag.text}" at characters {flag.start}-{flag.end}',
                        line=line,
                        field=path,
                    )
                )

    def _track_sameness(self, example) -> None:
        prompt, completion = prompt_and_completion(example)
        if prompt is None:
            return
        if len(self.prompts) < 2:
            self.prompts.add(prompt)
        if len(self.completions) < 2:
            self.completions.add(completion)
        if self.labels is not None:
            self.labels[(completion or "").strip()] += 1
            if len(self.labels) > LABEL_LIMIT:
                self.labels = None  # free text, not labels: stop counting

    def _flush_tokens(self) -> None:
        batch, self.pending = self.pending, []
        parts = [conversations_for(example) for _, example in batch]
        encoded = iter(self.tokenizer.encode([p for group in parts for p in group]))
        for (line, _), group in zip(batch, parts):
            sides = [next(encoded) for _ in group]
            length = max(side.full_length for side in sides)
            # What training will see: the first `context_length` tokens of each side.
            trainable = sum(float(side.loss_weights[1 : self.context_length].sum()) for side in sides)
            self.tokens.add(length)
            self.total_tokens += length
            self.trainable_tokens += trainable
            if self.context_length and length > self.context_length:
                self.truncated += 1
                left = "nothing left to train on" if trainable == 0 else f"{trainable:.0f} trainable tokens left"
                self.log.add(
                    Finding(
                        "too_long",
                        f"{length} tokens > context {self.context_length}: {length - self.context_length} "
                        f"truncated, {left}",
                        line=line,
                        severity="error" if trainable == 0 else None,
                    )
                )

    # -------------------------------------------------------------------------------- the file
    def finish(self, path: Path) -> CheckReport:
        if self.pending:
            self._flush_tokens()
        self._dataset_findings()
        kind = self.kinds.most_common(1)[0][0] if self.kinds else None
        fmt = None
        if len(self.formats) == 1:
            fmt = next(iter(self.formats))
        elif self.formats:
            fmt = "mixed"
        labels = dict(self.labels.most_common()) if self._classification_like() else None
        return CheckReport(str(path), fmt, kind, self.records, self.examples, self.log, self._stats(), labels)

    def _dataset_findings(self) -> None:
        if self.records == 0:
            self.log.add(Finding("file_empty", "no records in the file"))
        elif self.examples < MIN_EXAMPLES:
            self.log.add(
                Finding("too_few_examples", f"{self.examples} usable example(s); at least {MIN_EXAMPLES} needed")
            )
        elif self.examples < RECOMMENDED_EXAMPLES:
            self.log.add(Finding("few_examples", f"{self.examples} examples; 100 or more is recommended"))
        if len(self.kinds) > 1:
            minority = min(self.kinds, key=self.kinds.get)
            counts = ", ".join(f"{n} {k}" for k, n in self.kinds.most_common())
            self.log.add(
                Finding(
                    "mixed_formats",
                    f"the file mixes kinds of examples ({counts})",
                    line=self.first_line_of_kind[minority],
                )
            )
        elif len(self.formats) > 1:
            ranked = self.formats.most_common()
            counts = ", ".join(f"{name}: {n}" for name, n in ranked)
            minority = ranked[1:]  # every format but the most common: the lines to look at
            where = "; ".join(f"{name} on {self._lines_text(name, n)}" for name, n in minority)
            self.log.add(
                Finding(
                    "mixed_source_formats",
                    f"the file mixes formats ({counts}); {where}",
                    line=min(self.first_lines_of_format[name][0] for name, _ in minority),
                )
            )
        self._duplicate_findings()
        if self.examples >= 3 and len(self.prompts) == 1:
            self.log.add(Finding("identical_prompts", f"all {self.examples} examples share one prompt"))
        if self.examples >= 3 and len(self.completions) == 1:
            self.log.add(Finding("identical_completions", f"all {self.examples} examples share one completion"))
        if self._classification_like():
            counts = self.labels.most_common()
            shown = ", ".join(f"{label!r}: {n}" for label, n in counts[:10])
            self.log.add(
                Finding(
                    "classification_like",
                    f"{len(counts)} distinct completions over {self.examples} examples ({shown})",
                )
            )
            most, least = counts[0], counts[-1]
            if most[1] >= 5 * least[1]:
                self.log.add(
                    Finding("label_imbalance", f"{most[0]!r} has {most[1]} examples, {least[0]!r} only {least[1]}")
                )
        if self.tokenizer is None:
            self.log.add(Finding("no_tokenizer", "token statistics need a model's tokenizer"))

    def _lines_text(self, fmt: str, count: int) -> str:
        """'line 7' or 'lines 7, 19, ...': the first lines in `fmt`, with '...' when there are more."""
        lines = self.first_lines_of_format[fmt]
        shown = ", ".join(map(str, lines)) + (", ..." if count > len(lines) else "")
        return f"line {shown}" if count == 1 else f"lines {shown}"

    def _classification_like(self) -> bool:
        if self.labels is None or self.examples < 20 or len(self.labels) < 2:
            return False
        return len(self.labels) <= self.examples // 5 and max(len(label) for label in self.labels) <= 64

    def _duplicate_findings(self) -> None:
        total, first = self.duplicates.duplicates(keep=self.log.keep_per_code)
        self.log.add_counted(
            "duplicate",
            total,
            [Finding("duplicate", f"same as line {original}", line=line) for line, original in first],
        )

    def _stats(self) -> dict:
        epochs = auto_epochs(self.examples)
        stats = {
            "examples": self.examples,
            "records": self.records,
            "invalid_records": self.records - self.examples,
            "formats": dict(self.formats),
            "messages_per_example": self.messages.summary(),
            "personal_data": dict(self.pii),
            "default_epochs": epochs,
        }
        if self.tokenizer is not None:
            stats.update(
                {
                    "tokens_per_example": self.tokens.summary(),
                    "token_histogram": self.tokens.bins(),
                    "total_tokens": int(self.total_tokens),
                    "trainable_tokens": int(self.trainable_tokens),
                    "truncated_examples": self.truncated,
                    "context_length": self.context_length,
                    "tokens_x_epochs": int(self.total_tokens * epochs),
                }
            )
            if self.parameters:
                from tuneforge.hardware import estimated_tokens_per_second, resolve_device

                # Where `device: auto` would train: this machine's GPU if it has one, else its CPU.
                device = resolve_device("auto")
                speed = estimated_tokens_per_second(self.parameters, "lora", device=device)
                stats["estimated_on_device"] = device
                stats["estimated_lora_tokens_per_second"] = round(speed, 1)
                stats["estimated_training_seconds"] = round(self.total_tokens * epochs / speed, 1)
        return stats


def check_file(
    path: Path,
    tokenizer: ChatTokenizer | None = None,
    context_length: int | None = None,
    parameters: int | None = None,
    keep_per_code: int = 20,
    on_progress=None,
) -> CheckReport:
    checker = DatasetChecker(tokenizer, context_length, parameters, keep_per_code)
    for item in iter_records(path, on_progress):
        checker.add(item)
    return checker.finish(path)


def check_with_model(path: Path, model: str | None, keep_per_code: int = 20, on_progress=None) -> CheckReport:
    """`check_file` with token statistics from `model`'s tokenizer and chat template (None: no tokens)."""
    if model is None:
        return check_file(path, keep_per_code=keep_per_code, on_progress=on_progress)
    file_kind(path)  # a path that is no data file is said at once, not after seconds of loading a tokenizer
    open_data_file(path).close()
    from tuneforge.models.catalog import load_tokenizer, model_facts

    facts = model_facts(model)
    tokenizer = ChatTokenizer(load_tokenizer(model))
    return check_file(path, tokenizer, facts["context_length"], facts["parameters"], keep_per_code, on_progress)
