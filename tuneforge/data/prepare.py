"""`tuneforge data prepare FILE --out DIR`: a checked file in, a training-ready dataset out.

Check the file (`checks.py`); then, streaming: normalise every text (`clean.normalize`), optionally
redact personal data, convert to canonical JSONL (OpenAI chat, OpenAI DPO, or text), drop exact
duplicates, and split deterministically (`split.py`) into train/validation/test. `manifest.json`
records the sha256 of the input and of every output, the counts and the findings: the start of
every run's lineage. Same input, options and seed give byte-identical outputs.

Records with errors stop the command, unless `drop_invalid` is set; then they go, with their
findings, to `rejected.jsonl` (never silently lost: an unreadable line keeps its text in "raw").
"""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuneforge import __version__
from tuneforge.data import clean
from tuneforge.data.checks import CheckReport, prompt_and_completion
from tuneforge.data.examples import map_texts, to_openai_record
from tuneforge.data.formats import parse_record
from tuneforge.data.reader import Record, iter_records
from tuneforge.data.split import SPLIT_NAMES, assign_splits, sha256_file, split_key, write_manifest
from tuneforge.errors import TuneforgeError

DATASET_LEVEL_ERRORS = {"file_empty", "too_few_examples", "mixed_formats"}
# Figures that depend on this machine, not on the data: kept out of the manifest so it stays reproducible.
MACHINE_STATS = {"estimated_lora_tokens_per_second", "estimated_training_seconds", "estimated_on_device"}


class DataHasErrors(TuneforgeError):
    def __init__(self, report: CheckReport, message: str, fix: str):
        super().__init__(message, fix=fix)
        self.report = report


@dataclass
class PrepareOptions:
    ratios: tuple[float, float, float] = (0.9, 0.05, 0.05)
    seed: int = 42
    redact_pii: bool = False
    dedupe: bool = True
    drop_invalid: bool = False
    model: str | None = None  # recorded in the manifest: token statistics were counted with it


@dataclass
class PrepareResult:
    out_dir: Path
    manifest: dict
    report: CheckReport


def _normalise_and_redact(example, redact_pii: bool, redactions: Counter, changed: list[int]):
    def transform(text: str) -> str:
        result = clean.normalize(text)
        if redact_pii:
            result, found = clean.redact(result)
            redactions.update(item.kind for item in found)
        if result != text:
            changed[0] += 1
        return result

    return map_texts(example, transform)


def prepare(path: Path, out_dir: Path, report: CheckReport, options: PrepareOptions) -> PrepareResult:
    """Write the prepared dataset. `report` is `check_file`'s report on the same file."""
    dataset_errors = [code for code in DATASET_LEVEL_ERRORS if report.findings.counts[code]]
    if dataset_errors or (report.findings.errors and not options.drop_invalid):
        fix = "Fix the errors listed above" + (
            "" if dataset_errors else ", or pass --drop-invalid to set those records aside in rejected.jsonl"
        )
        raise DataHasErrors(report, f"{path}: {report.findings.errors} error(s); nothing was written", fix + ".")

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / ".canonical.jsonl.partial"
    keys, label_of, labels_seen = [], [], {}
    counts = Counter()
    redactions: Counter[str] = Counter()
    changed = [0]
    seen: set[bytes] = set()
    stratify = report.labels is not None
    with staging.open("wb") as canonical, (out_dir / "rejected.jsonl").open("wb") as rejected:
        for item in iter_records(path):
            if not isinstance(item, Record):
                if item.severity == "error":  # unreadable line: keep the finding so the line is accounted for
                    counts["invalid"] += 1
                    rejected.write(
                        _json_line({"line": item.line, "findings": [item.as_dict()], "record": None, "raw": item.raw})
                    )
                continue
            _, parsed, findings = parse_record(item.value, item.line)
            if parsed is None:
                counts["invalid"] += 1
                errors = [f.as_dict() for f in findings if f.severity == "error"]
                rejected.write(_json_line({"line": item.line, "findings": errors, "record": item.value}))
                continue
            example = _normalise_and_redact(parsed.example, options.redact_pii, redactions, changed)
            line = _json_line(to_openai_record(example))
            digest = hashlib.blake2b(line, digest_size=16).digest()
            if options.dedupe and digest in seen:
                counts["duplicates_removed"] += 1
                continue
            seen.add(digest)
            canonical.write(line)
            keys.append(split_key(options.seed, line))
            if stratify:
                label = (prompt_and_completion(example)[1] or "").strip()
                label_of.append(labels_seen.setdefault(label, len(labels_seen)))
    del seen

    assignment = assign_splits(
        np.asarray(keys, dtype=np.uint64), np.asarray(label_of) if stratify else None, options.ratios
    )
    outputs = _write_splits(staging, out_dir, assignment)
    staging.unlink()
    if counts["invalid"] == 0:
        (out_dir / "rejected.jsonl").unlink()
    else:
        outputs["rejected"] = _describe(out_dir / "rejected.jsonl", counts["invalid"])

    manifest = {
        "tuneforge_version": __version__,
        "created_by": "tuneforge data prepare",
        "input": {
            "file": path.name,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "format": report.format,
            "kind": report.kind,
            "records": report.records,
        },
        "options": {
            "split": list(options.ratios),
            "seed": options.seed,
            "redact_pii": options.redact_pii,
            "dedupe": options.dedupe,
            "drop_invalid": options.drop_invalid,
            "model": options.model,
        },
        "outputs": outputs,
        "counts": {
            "examples_in": report.examples,
            "examples_out": len(keys),
            "invalid_set_aside": counts["invalid"],
            "duplicates_removed": counts["duplicates_removed"],
            "texts_normalised": changed[0],
            "redactions": dict(sorted(redactions.items())),
        },
        "labels": _split_labels(label_of, labels_seen, assignment) if stratify else None,
        "findings": report.findings.summary(),
        "stats": {k: v for k, v in report.stats.items() if k not in MACHINE_STATS},
    }
    write_manifest(out_dir, manifest)
    return PrepareResult(out_dir, manifest, report)


def _json_line(record) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _write_splits(staging: Path, out_dir: Path, assignment: np.ndarray) -> dict:
    files = [(out_dir / f"{name}.jsonl").open("wb") for name in SPLIT_NAMES]
    try:
        with staging.open("rb") as canonical:
            for split_index, line in zip(assignment, canonical):
                files[split_index].write(line)
    finally:
        for handle in files:
            handle.close()
    sizes = np.bincount(assignment, minlength=3) if len(assignment) else [0, 0, 0]
    return {name: _describe(out_dir / f"{name}.jsonl", int(sizes[i])) for i, name in enumerate(SPLIT_NAMES)}


def _describe(path: Path, examples: int) -> dict:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "examples": examples}


def _split_labels(label_of: list[int], labels_seen: dict[str, int], assignment: np.ndarray) -> dict:
    names = {index: label for label, index in labels_seen.items()}
    result = {}
    for split_index, split_name in enumerate(SPLIT_NAMES):
        tally = Counter(names[label_of[i]] for i in np.flatnonzero(assignment == split_index))
        result[split_name] = dict(sorted(tally.items()))
    return result
