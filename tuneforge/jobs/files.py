"""Uploaded files: what the files API asks of the store.

`store_upload` keeps an upload: its purpose and name checked before a byte is written, its bytes
written under the home's `files/` with their size capped and their SHA-256 taken, then its row.
A `fine-tune` file is left `uploaded` for `check_stored_file`, the data stage's format check (no
tokenizer: the job's model is not known yet), which moves it to `processed`, or to `error` with the
first problems (line, field, fix) in `status_details`; other purposes are `processed` at once.
`readable_file` is a file whose bytes can be served, or `ContentMissing` when its row outlived them.
"""

import hashlib
import logging
from pathlib import Path
from typing import BinaryIO

from tuneforge.errors import StorageUnavailable, TuneforgeError, UsageError
from tuneforge.registry import artifacts, jobs
from tuneforge.registry.jobs import StoredFile

log = logging.getLogger("tuneforge.files")

PURPOSES = ("fine-tune", "user_data", "evals")
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
CHUNK = 1 << 20  # bytes read from the upload at a time: the cap is checked before each is written


class UploadRefused(UsageError):
    """An upload the store will not keep; `param` is the form field at fault (`purpose` or `file`)."""

    def __init__(self, message: str, *, param: str):
        super().__init__(message)
        self.param = param


class FileTooLarge(UploadRefused):
    """The upload's bytes ran past `limit`; nothing of it is kept."""

    def __init__(self, filename: str, limit: int):
        super().__init__(f"'{filename}' is larger than the limit of {limit:,} bytes", param="file")
        self.filename, self.limit = filename, limit


class ContentMissing(TuneforgeError):
    """A file's row is there but its bytes are not (deleted or lost outside Tuneforge): gone for good."""

    def __init__(self, row: StoredFile):
        super().__init__(
            f"The content of file '{row.id}' ({row.filename}) is missing from this server's storage",
            fix="Delete the file and upload it again.",
        )
        self.file_id = row.id


def store_upload(project: str, filename: str | None, purpose: str, stream: BinaryIO, limit: int) -> StoredFile:
    """Keep `stream`'s bytes as `project`'s file: its row, `uploaded` if `check_stored_file` is still to
    run on it (a `fine-tune` file), `processed` otherwise. UploadRefused (a purpose or a name the store
    does not take) before anything is written; FileTooLarge past `limit` bytes, with nothing kept."""
    if purpose not in PURPOSES:
        raise UploadRefused(f"purpose '{purpose}' is not supported; use one of {', '.join(PURPOSES)}", param="purpose")
    filename = Path(filename or "upload.jsonl").name  # the name only: an upload never picks a path
    suffix = Path(filename).suffix.lower()
    if purpose == "fine-tune" and suffix not in SUFFIXES:
        raise UploadRefused(f"'{filename}': fine-tuning files must be {', '.join(SUFFIXES)}", param="file")
    file_id = jobs.new_id("file-")
    target = jobs.files_dir() / f"{file_id}{suffix if suffix in SUFFIXES else ''}"
    digest, size = hashlib.sha256(), 0
    try:
        with target.open("wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise FileTooLarge(filename, limit)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:  # too large, or the stream failed: no bytes without a row
        target.unlink(missing_ok=True)
        raise
    try:
        location = artifacts.publish(target, f"files/{target.name}")
    except StorageUnavailable:  # no row, and no bytes left behind here either
        target.unlink(missing_ok=True)
        raise
    row = jobs.create_file(project, filename, purpose, location, size, digest.hexdigest(), file_id)
    if purpose != "fine-tune":
        jobs.set_file_status(file_id, "processed")
        row.status = "processed"
    return row


def check_stored_file(file_id: str, location: str) -> None:
    """The data stage's format check of an uploaded fine-tuning file, recorded on its row (no tokenizer:
    the job's model is not known yet). Slow on a large file: the server runs it after answering."""
    from tuneforge.data.checks import check_with_model

    try:
        report = check_with_model(artifacts.local_copy(location), None)
    except Exception as error:  # an unreadable file is the uploader's problem, reported on the file
        jobs.set_file_status(file_id, "error", f"{type(error).__name__}: {error}")
        return
    if report.ok:
        jobs.set_file_status(file_id, "processed", report=report.as_json())
        return
    problems = [
        f"line {f.line}"
        + (f", field {f.field}" if f.field else "")
        + f": {f.message}"
        + (f" Fix: {f.fix}" if f.fix else "")
        for f in report.findings.findings()
        if f.severity == "error"
    ][:5]
    jobs.set_file_status(
        file_id, "error", f"{report.findings.errors} error(s). " + " | ".join(problems), report=report.as_json()
    )


def readable_file(project: str, file_id: str) -> StoredFile | None:
    """`project`'s file whose bytes are on disk to be read; None if the project has no such file;
    ContentMissing (logged for the operator, with the path) if its bytes are gone."""
    row = jobs.get_file(project, file_id)
    if row is None:
        return None
    if not artifacts.exists(row.path):
        log.warning("file %s (%s): its bytes are missing from %s", row.id, row.filename, row.path)
        raise ContentMissing(row)
    return row
