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
            f"{path}: preference pairs need objective dpo, not supervised fine-tuning",
            code="wrong_method",
            fix="Train on chat examples, or use objective dpo (--objective dpo).",
        )
    tokenizer.end_of_turn_ids  # raises when the template never closes a reply with a special token
    encoded = tokenizer.encode([example for _, example in examples])
    for (line, _), item in zip(examples, encoded):
        check_trainable(item, path, line, tokenizer.max_length)
    return encoded


def check_trainable(item: TokenizedExample, path: Path, line: int, max_length: int | None, field: str | None = None):
    """A TrainingDataError naming the line (and field) when truncation left nothing to learn from."""
    if item.trainable_tokens == 0:
        what = f"line {line}'s {field}" if field else f"line {line}"
        raise TrainingDataError(
            f"{path}: {what} has no trainable token after truncation to {max_length} tokens "
            f"({item.full_length} tokens in all)",
            code="too_long",
            line=line,
            field=field,
            fix="Raise max_seq_length, or shorten the example's prompt.",
        )


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


# ------------------------------------------------------------------------- held-out validation
HELD_OUT_FLOOR = 8  # fewer validation examples give a loss too noisy to stop on
HELD_OUT_CAP = 200  # more cost validation time and teach nothing: the default max_eval_examples
HELD_OUT_MINIMUM_TRAINING = 50  # below this every example is needed to learn: no split
LABEL_SHARE = 0.2  # at most this many distinct replies per example count as labels (classification-like)


@dataclass(frozen=True)
class HeldOut:
    """What a run held out of its training file for validation, as the lineage and card record it."""

    share: float
    seed: int
    examples: int
    stratified: bool

    def describe(self) -> str:
        by = ", stratified by reply" if self.stratified else ""
        return f"{self.examples} examples ({self.share:.0%} of the training file, seed {self.seed}{by}) held out"


def hold_out(
    examples: list[TokenizedExample], share: float, seed: int
) -> tuple[list[TokenizedExample], list[TokenizedExample], HeldOut | None]:
    """(training, validation, what was held out) when no validation file was given.

    Seeded and content-keyed like `tuneforge data prepare`'s split (data/split.py): the same file and
    seed hold out the same examples on any machine and on a resume. Classification-like data (few
    distinct replies) is stratified by reply, so every label is validated in proportion. The share
    is kept between HELD_OUT_FLOOR and HELD_OUT_CAP examples; a file under HELD_OUT_MINIMUM_TRAINING
    examples, or a share of 0, holds nothing out."""
    import numpy as np

    from tuneforge.data.split import assign_splits, split_key

    n = len(examples)
    if share <= 0 or n < HELD_OUT_MINIMUM_TRAINING:
        return examples, [], None
    count = min(HELD_OUT_CAP, max(HELD_OUT_FLOOR, round(share * n)))
    keys = np.asarray(
        [split_key(seed, np.asarray(e.input_ids, dtype=np.int64).tobytes()) for e in examples], dtype=np.uint64
    )
    # What the model must answer (full-weight tokens; prompt tokens weigh prompt_loss_weight < 1)
    replies = [tuple(t for t, w in zip(e.input_ids, e.loss_weights) if w >= 1.0) for e in examples]
    distinct = {reply: index for index, reply in enumerate(dict.fromkeys(replies))}
    stratified = 1 < len(distinct) <= LABEL_SHARE * n
    labels = np.asarray([distinct[reply] for reply in replies]) if stratified else None
    assignment = assign_splits(keys, labels, (1 - count / n, count / n, 0.0))
    training = [e for e, part in zip(examples, assignment) if part == 0]
    validation = [e for e, part in zip(examples, assignment) if part == 1]
    return training, validation, HeldOut(round(count / n, 4), seed, len(validation), stratified)
