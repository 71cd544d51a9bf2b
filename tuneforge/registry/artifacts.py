"""Where uploaded files' bytes live: the home's `files/` folder by default, or an object store.

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
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import BinaryIO

from tuneforge.errors import UsageError
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
    location = f"{url}/{key}"
    filesystem, path = _filesystem(location)
    filesystem.put_file(str(local), path)
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
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        filesystem, path = _filesystem(location)
        partial = target.with_name(f".{target.name}.{os.getpid()}.part")
        filesystem.get_file(path, str(partial))
        partial.replace(target)
    return target


def exists(location: str) -> bool:
    if not is_remote(location):
        return Path(location).is_file()
    filesystem, path = _filesystem(location)
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
