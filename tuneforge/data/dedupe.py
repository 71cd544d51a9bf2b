"""Exact-duplicate detection over any number of examples in bounded memory.

Each example contributes a 64-bit content hash and its line (16 bytes). Up to `memory_entries`
pairs (8 MB) stay in memory; past that they spill to 256 bucket files on disk, partitioned by the
hash's top byte, so that at the end each bucket is sorted on its own: peak memory is one bucket,
about 1/256 of the pairs, instead of all of them, and does not grow with the file.
"""

import tempfile
from array import array
from pathlib import Path

import numpy as np

BUCKETS = 256


def _duplicates_in(hashes: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(line, line of the first occurrence) of every repeat among these pairs."""
    order = np.lexsort((lines, hashes))  # by hash, then line: each group starts with its original
    hashes, lines = hashes[order], lines[order]
    is_repeat = np.r_[False, hashes[1:] == hashes[:-1]]
    original = np.maximum.accumulate(np.where(is_repeat, 0, np.arange(len(lines))))
    repeats = np.flatnonzero(is_repeat)
    return lines[repeats], lines[original[repeats]]


class DuplicateIndex:
    def __init__(self, memory_entries: int = 1 << 19):
        self.memory_entries = memory_entries
        self.hashes, self.lines = array("Q"), array("Q")
        self.spill_dir: tempfile.TemporaryDirectory | None = None

    def add(self, content_hash: int, line: int) -> None:
        self.hashes.append(content_hash)
        self.lines.append(line)
        if len(self.hashes) >= self.memory_entries:
            self._spill()

    def _spill(self) -> None:
        if self.spill_dir is None:
            self.spill_dir = tempfile.TemporaryDirectory(prefix="tuneforge-dedupe-")
        pairs = np.stack(
            [np.frombuffer(self.hashes, dtype=np.uint64), np.frombuffer(self.lines, dtype=np.uint64)], axis=1
        )
        buckets = (pairs[:, 0] >> np.uint64(56)).astype(np.intp)
        order = np.argsort(buckets, kind="stable")
        bounds = np.searchsorted(buckets[order], np.arange(BUCKETS + 1))
        for bucket in range(BUCKETS):
            chunk = pairs[order[bounds[bucket] : bounds[bucket + 1]]]
            if len(chunk):
                with (Path(self.spill_dir.name) / f"{bucket:03d}.bin").open("ab") as handle:
                    handle.write(chunk.tobytes())
        self.hashes, self.lines = array("Q"), array("Q")

    def duplicates(self, keep: int) -> tuple[int, list[tuple[int, int]]]:
        """How many examples repeat an earlier one, and the first `keep` of them as (line, original line)."""
        if self.spill_dir is None:
            repeat, original = _duplicates_in(
                np.frombuffer(self.hashes, dtype=np.uint64), np.frombuffer(self.lines, dtype=np.uint64)
            )
            first = np.argsort(repeat, kind="stable")[:keep]
            return len(repeat), [(int(repeat[i]), int(original[i])) for i in first]
        self._spill()
        total, kept = 0, []
        for path in sorted(Path(self.spill_dir.name).glob("*.bin")):
            pairs = np.fromfile(path, dtype=np.uint64).reshape(-1, 2)
            repeat, original = _duplicates_in(pairs[:, 0], pairs[:, 1])
            total += len(repeat)
            kept.extend(zip(repeat.tolist(), original.tolist()))
            kept = sorted(kept)[:keep]  # the earliest lines over all buckets so far
        self.spill_dir.cleanup()
        return total, kept
