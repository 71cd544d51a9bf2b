"""Where uploaded files', run directories' and evaluation reports' bytes live: the home by default,
or an object store.

`TUNEFORGE_STORAGE_URL` (an fsspec URL: `s3://bucket/prefix` for S3 or any S3-compatible store,
`gs://`, `az://`, ...) keeps them in the store instead. A file row's `path` is then the object's URL
(`s3://bucket/prefix/files/file-….jsonl`), the server streams its content from there, and a process
that must read it as a file (the data check, training) works on a copy in its home's
`cache/storage/`, fetched once. `TUNEFORGE_STORAGE_OPTIONS` (JSON) is passed to the filesystem, e.g.
`{"endpoint_url": "http://minio.internal:9000"}`; credentials come as the store's library finds
them (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, an instance role).

A location is either a local path (every row written before a store was set, and every row without
one) or a URL: code that reads a file row's bytes goes through `local_copy`, `open_bytes`,
`exists` and `delete`, which take both.

Whole folders (a run's checkpoints and weights, an evaluation's report) go up with `put_folder` and
come back with `get_folder`, by key under the store's URL; runs/stored.py says which and when.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from tuneforge.errors import StorageUnavailable, UsageError
from tuneforge.settings import tuneforge_home


def storage_url() -> str | None:
    url = os.environ.get("TUNEFORGE_STORAGE_URL", "").strip().rstrip("/")
    return url or None


def is_remote(location: str) -> bool:
    return "://" in location


def _filesystem(url: str):
    """(fsspec filesystem, path within it) for a URL under the store."""
    import fsspec

    raw = os.environ.get("TUNEFORGE_STORAGE_OPTIONS", "").strip()
    try:
        options = json.loads(raw) if raw else {}
    except json.JSONDecodeError as error:
        raise UsageError(
            f"TUNEFORGE_STORAGE_OPTIONS is not JSON: {error}", fix='Give an object, e.g. {"endpoint_url": "..."}'
        ) from None
    return fsspec.core.url_to_fs(url, **options)


def publish(local: Path, key: str) -> str:
    """Keep the local file `local` as `key` (e.g. `files/file-x.jsonl`): with a store, upload it,
    move it into the cache as this machine's copy, and return its URL; without one, the local path."""
    url = storage_url()
    if url is None:
        return str(local)
    location = key_url(key)
    filesystem, path = _filesystem(location)
    try:
        filesystem.put_file(str(local), path)
    except Exception as error:  # noqa: BLE001 - whatever the store's library raised: the store is the cause
        raise StorageUnavailable(
            f"the object store did not take {location}: {type(error).__name__}: {error}",
            fix="Check TUNEFORGE_STORAGE_URL, its credentials and the store (`tuneforge doctor`).",
        ) from error
    target = _cache_path(location)  # the local file becomes this machine's copy
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, target)
    return location


def _cache_path(location: str) -> Path:
    """This machine's copy of a stored object: under the home's cache, named by its URL."""
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    return tuneforge_home() / "cache" / "storage" / digest / Path(location.split("://", 1)[1]).name


def local_copy(location: str) -> Path:
    """A local path with the location's bytes: the path itself, or the stored object fetched once
    into the cache (written aside and renamed, so a reader never sees half of it)."""
    if not is_remote(location):
        return Path(location)
    target = _cache_path(location)
    if not target.exists() and not _download(location, target):
        raise FileNotFoundError(location)
    return target


def _download(location: str, target: Path) -> bool:
    """The object at `location` to the file `target`, written aside and renamed (a reader never sees
    half of it); False when the store has no such object."""
    filesystem, path = _filesystem(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        filesystem.get_file(path, str(partial))
    except FileNotFoundError:
        return False
    partial.replace(target)
    return True


def exists(location: str) -> bool:
    if not is_remote(location):
        return Path(location).is_file()
    filesystem, path = _filesystem(location)
    filesystem.invalidate_cache(path)  # another process may have written or removed it since
    return filesystem.exists(path)


def open_bytes(location: str) -> BinaryIO:
    if not is_remote(location):
        return open(location, "rb")
    filesystem, path = _filesystem(location)
    return filesystem.open(path, "rb")


def delete(location: str) -> None:
    """Remove the bytes (and this machine's copy); nothing happens if they are gone already."""
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    filesystem, path = _filesystem(location)
    if filesystem.exists(path):
        filesystem.rm_file(path)
    _cache_path(location).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ whole folders
def run_key(run_id: str, *parts: str) -> str:
    """Where a run's files are kept under the store: `runs/<run id>/…` (runs/stored.py)."""
    return "/".join(("runs", run_id, *parts))


def key_url(key: str) -> str:
    """The URL of `key` under the store (which must be set)."""
    url = storage_url()
    if url is None:
        raise RuntimeError("no TUNEFORGE_STORAGE_URL: nothing is kept in a store")
    return f"{url}/{key.strip('/')}"


def put_file(local: Path, key: str) -> None:
    """Upload `local` as `key`, keeping it where it is."""
    filesystem, path = _filesystem(key_url(key))
    filesystem.put_file(str(local), path)


def put_folder(local: Path, key: str, last: str | None = None) -> None:
    """Upload every file under `local` to `key/…`; the file named `last` goes up after all others, so
    that a reader who finds it finds the rest (a checkpoint's COMPLETE marker)."""
    filesystem, root = _filesystem(key_url(key))
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == last):
        filesystem.put_file(str(path), f"{root}/{path.relative_to(local).as_posix()}")


def listing(key: str) -> list[str]:
    """The names directly under `key` (files and folders), fresh from the store; [] if none."""
    filesystem, path = _filesystem(key_url(key))
    filesystem.invalidate_cache(path)
    try:
        return sorted(Path(entry.rstrip("/")).name for entry in filesystem.ls(path, detail=False))
    except FileNotFoundError:
        return []


def key_exists(key: str) -> bool:
    return exists(key_url(key))


def get_file(key: str, local: Path) -> bool:
    """Fetch `key` to `local` (written aside and renamed); False when the store has no such file."""
    return _download(key_url(key), local)


def get_folder(key: str, local: Path) -> bool:
    """Fetch every file under `key` into the folder `local`, which appears whole or not at all (it is
    filled aside and renamed); False when the store has nothing under `key`."""
    filesystem, root = _filesystem(key_url(key))
    filesystem.invalidate_cache(root)
    found = [path for path in filesystem.find(root) if path != root]
    if not found:
        return False
    partial = local.with_name(f".{local.name}.{os.getpid()}.part")
    shutil.rmtree(partial, ignore_errors=True)
    for path in found:
        target = partial / path[len(root) :].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        filesystem.get_file(path, str(target))
    shutil.rmtree(local, ignore_errors=True)
    local.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(local)
    return True


def remove_folder(key: str) -> None:
    """Remove everything under `key`; nothing happens if it is gone already."""
    filesystem, path = _filesystem(key_url(key))
    filesystem.invalidate_cache(path)
    if filesystem.exists(path):
        filesystem.rm(path, recursive=True)
