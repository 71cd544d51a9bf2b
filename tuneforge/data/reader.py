"""Stream the records of a data file, one at a time, with their line numbers.

JSONL (`.jsonl`, `.ndjson`, `.json` with one object per line), CSV/TSV (a header row naming the
format's keys; cells holding JSON lists, e.g. a `messages` column, are parsed) and plain text
(`.txt`, `.md`: one document per blank-line-separated block). Reading is line by line from a binary
stream, so a multi-gigabyte file is read in constant memory, and a line that is not UTF-8 or not
JSON becomes a `Finding` instead of stopping the read.
"""

import csv
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.findings import Finding
from tuneforge.errors import UsageError

JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
DELIMITED_SUFFIXES = {".csv": ",", ".tsv": "\t"}
TEXT_SUFFIXES = {".txt", ".md", ".text"}

# CSV cells may be long (whole conversations as JSON); the default limit is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(slots=True)
class Record:
    line: int  # 1-based; for a multi-line text block, its first line
    value: Any  # a dict for JSONL/CSV, a str for plain text


def file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in DELIMITED_SUFFIXES:
        return suffix[1:]
    if suffix in TEXT_SUFFIXES:
        return "txt"
    raise UsageError(
        f"{path}: unsupported file type '{suffix or '(none)'}'",
        fix="Use .jsonl (one JSON object per line), .csv, .tsv or .txt.",
    )


def open_data_file(path: Path):
    if not path.exists():
        raise UsageError(f"{path}: no such file", fix="Check the path.")
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, not a data file", fix="Name a .jsonl, .csv, .tsv or .txt file.")
    return path.open("rb")


def iter_records(path: Path, on_progress: Callable[[int], None] | None = None) -> Iterator[Record | Finding]:
    """`on_progress(bytes_read)` is called every few thousand records, for a progress bar."""
    kind = file_kind(path)
    with open_data_file(path) as stream:
        if on_progress is not None:
            stream = _ReportingStream(stream, on_progress)
        if kind == "jsonl":
            yield from _jsonl_records(stream)
        elif kind in ("csv", "tsv"):
            yield from _delimited_records(stream, DELIMITED_SUFFIXES["." + kind])
        else:
            yield from _text_records(stream)


class _ReportingStream:
    """Iterates a binary file's lines like the file itself, reporting the bytes read now and then."""

    def __init__(self, stream, on_progress: Callable[[int], None], every: int = 4096):
        self.stream, self.on_progress, self.every = stream, on_progress, every

    def __iter__(self):
        for number, line in enumerate(self.stream, start=1):
            if number % self.every == 0:
                self.on_progress(self.stream.tell())
            yield line
        self.on_progress(self.stream.tell())


def _decode(raw: bytes, line: int) -> tuple[str, Finding | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        finding = Finding(
            "not_utf8",
            f"byte 0x{raw[error.start]:02x} at column {error.start + 1} is not valid UTF-8",
            line=line,
        )
        return raw.decode("utf-8", errors="replace"), finding


def _jsonl_records(stream) -> Iterator[Record | Finding]:
    for number, raw in enumerate(stream, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a UTF-8 byte-order mark, as some editors write
        if not raw.strip():
            yield Finding("blank_line", "blank line", line=number)
            continue
        text, not_utf8 = _decode(raw, number)
        if not_utf8:
            not_utf8.raw = text
            yield not_utf8
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            yield Finding("invalid_json", f"{error.msg} at column {error.colno}", line=number, raw=text)
            continue
        if not isinstance(value, dict):
            yield Finding("not_object", f"found a JSON {json_type(value)}, expected an object", line=number, raw=text)
            continue
        yield Record(number, value)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _delimited_records(stream, delimiter: str) -> Iterator[Record | Finding]:
    pending: list[Finding] = []

    def lines() -> Iterator[str]:
        for number, raw in enumerate(stream, start=1):
            text, not_utf8 = _decode(raw, number)
            if not_utf8:
                pending.append(not_utf8)
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    header: list[str] | None = None
    while True:
        start_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            yield from pending
            pending.clear()
            yield Finding(
                "invalid_json", f"malformed {('CSV', 'TSV')[delimiter == chr(9)]} row: {error}", line=start_line
            )
            continue
        bad_bytes = bool(pending)
        yield from pending
        pending.clear()
        if header is None:
            header = [name.strip().lstrip("\ufeff") for name in row]
            continue
        if bad_bytes or not any(cell.strip() for cell in row):
            continue
        yield Record(start_line, {name: _cell_value(cell) for name, cell in zip(header, row) if name})


def _cell_value(cell: str) -> Any:
    """Cells holding a JSON list or object (a `messages` column, a chosen message list) are parsed."""
    stripped = cell.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return cell
    return cell


def _text_records(stream) -> Iterator[Record | Finding]:
    block: list[str] = []
    block_start = 0
    for number, raw in enumerate(stream, start=1):
        text, not_utf8 = _decode(raw, number)
        if not_utf8:
            yield not_utf8
        if text.strip():
            if not block:
                block_start = number
            block.append(text.rstrip("\r\n"))
        elif block:
            yield Record(block_start, "\n".join(block))
            block = []
    if block:
        yield Record(block_start, "\n".join(block))
