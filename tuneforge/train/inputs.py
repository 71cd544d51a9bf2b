"""The training inputs of a run: which files, their examples, their token ids and loss weights.

Everything that can be wrong with the data is found here, before the model is loaded: records with
errors (reported as `tuneforge data check` would, with line and field), examples with nothing to
train on after truncation, and a chat template whose end-of-turn token would never be learned.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.checks import CheckReport, DatasetChecker
from tuneforge.data.examples import Example, Preference, Text
from tuneforge.data.reader import iter_records
from tuneforge.data.split import MANIFEST, sha256_file
from tuneforge.data.tokenize import ChatTokenizer, TokenizedExample
from tuneforge.errors import TuneforgeError, UsageError


class TrainingDataError(TuneforgeError):
    """The data cannot be trained on; `code`, `line` and `field` say where (the jobs API reports them)."""

    def __init__(
        self, message: str, *, code: str, line: int | None = None, field: str | None = None, fix: str | None = None
    ):
        super().__init__(message, fix=fix)
        self.code, self.line, self.field = code, line, field


@dataclass
class DataFile:
    path: Path
    sha256: str
    manifest: dict | None  # the data stage's manifest, when the file came from `tuneforge data prepare`


def locate_data(data: Path, validation: Path | None) -> tuple[DataFile, DataFile | None]:
    """A prepared directory gives train.jsonl (+ validation.jsonl); a file is the training file itself."""
    manifest = None
    if data.is_dir():
        if (data / MANIFEST).exists():
            manifest = json.loads((data / MANIFEST).read_text())
        train_path = data / "train.jsonl"
        if not train_path.exists():
            raise UsageError(
                f"{data}: no train.jsonl",
                fix="Point --data at a directory from `tuneforge data prepare`, or at a JSONL file.",
            )
        if validation is None and (data / "validation.jsonl").exists() and (data / "validation.jsonl").stat().st_size:
            validation = data / "validation.jsonl"
    elif data.exists():
        train_path = data
    else:
        raise UsageError(f"{data}: no such file or directory")
    if validation is not None and not validation.exists():
        raise UsageError(f"{validation}: no such file")
    # Absolute paths: the run's lineage must still point at the files from any working directory.
    train = DataFile(train_path.resolve(), sha256_file(train_path), manifest)
    return train, (DataFile(validation.resolve(), sha256_file(validation), manifest) if validation else None)


def load_examples_and_report(path: Path, purpose: str = "training") -> tuple[list[tuple[int, Example]], CheckReport]:
    """Every example of the file with its line, and the data check's report, in one pass; the first
    error stops with a data-check style message."""
    checker = DatasetChecker(keep_per_code=1)
    examples = []
    for item in iter_records(path):
        example = checker.add(item)
        if example is not None:
            examples.append((item.line, example))
    report = checker.finish(path)
    # Only a training set must hold the minimum of 10 examples; validation and test sets may be small.
    ignored = set() if purpose == "training" else {"too_few_examples"}
    errors = [f for f in report.findings.findings() if f.severity == "error" and f.code not in ignored]
    if errors:
        first = errors[0]
        where = ", ".join(p for p in (f"line {first.line}" if first.line else "", first.field or "") if p)
        raise TrainingDataError(
            f"{path}: {len(errors)} kind(s) of error in the {purpose} data; first: "
            f"{where + ': ' if where else ''}{first.message}",
            code=first.code,
            line=first.line,
            field=first.field,
            fix=f"Run `tuneforge data check {path}` for every finding. {first.fix}",
        )
    return examples, report


def load_examples(path: Path, purpose: str = "training") -> list[tuple[int, Example]]:
    return load_examples_and_report(path, purpose)[0]


def tokenize_for_sft(
    examples: list[tuple[int, Example]], tokenizer: ChatTokenizer, path: Path
) -> list[TokenizedExample]:
    """Token ids and loss weights; fails fast where training would silently learn nothing or never stop."""
    if any(isinstance(example, Preference) for _, example in examples):
        raise TrainingDataError(
            f"{path}: preference pairs need the DPO method, not supervised fine-tuning",
            code="wrong_method",
            fix="Train on chat examples, or use method dpo.",
        )
    tokenizer.end_of_turn_ids  # raises when the template never closes a reply with a special token
    encoded = tokenizer.encode([example for _, example in examples])
    for (line, _), item in zip(examples, encoded):
        if item.trainable_tokens == 0:
            raise TrainingDataError(
                f"{path}: line {line} has no trainable token after truncation to {tokenizer.max_length} tokens "
                f"({item.full_length} tokens in all)",
                code="too_long",
                line=line,
                fix="Raise max_seq_length, or shorten the example's prompt.",
            )
    return encoded


def tokenized_file(
    file: DataFile, tokenizer: ChatTokenizer, purpose: str = "training", use_cache: bool = True
) -> tuple[list[TokenizedExample], str]:
    """The file's examples ready for SFT, and its kind ("text" or "conversation"): from the token
    cache when it holds this file for this tokenizer, else read, checked, tokenised (and cached)."""
    from tuneforge.train import token_cache

    key = token_cache.cache_key(file.sha256, tokenizer) if use_cache else None
    if key and (hit := token_cache.load(key)) is not None:
        return hit
    examples = load_examples(file.path, purpose)
    encoded = tokenize_for_sft(examples, tokenizer, file.path)
    kind = "text" if all(isinstance(example, Text) for _, example in examples) else "conversation"
    if key:
        token_cache.save(key, encoded, kind)
    return encoded, kind
