"""Deterministic seeded train/validation/test splits, and the manifest that hashes every file.

Each example gets a sort key from a keyed hash of (seed, its canonical text): the same data and
seed give the same split on any machine, and adding an example does not reshuffle the others.
For classification-like data the order interleaves the labels (each example placed at its rank
within its label, scaled to [0, 1]), so every split holds each label in proportion.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from tuneforge.errors import UsageError

SPLIT_NAMES = ("train", "validation", "test")
MANIFEST = "manifest.json"


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--split '{text}': expected numbers like 0.9,0.05,0.05") from None
    if len(values) == 2:
        values.append(0.0)
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6 or values[0] == 0:
        raise UsageError(
            f"--split '{text}': need train,validation[,test] fractions >= 0 that sum to 1, with train > 0"
        )
    return values[0], values[1], values[2]


def split_key(seed: int, canonical_line: bytes) -> int:
    digest = hashlib.blake2b(canonical_line, digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little")


def split_sizes(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder rounding; a split asked for gets at least one example when there are enough."""
    exact = [n * r for r in ratios]
    sizes = [int(x) for x in exact]
    for i in sorted(range(3), key=lambda i: exact[i] - sizes[i], reverse=True)[: n - sum(sizes)]:
        sizes[i] += 1
    wanted = [i for i in range(3) if ratios[i] > 0]
    if n >= len(wanted):
        for i in wanted:
            if sizes[i] == 0:
                donor = max(range(3), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes


def assign_splits(keys: np.ndarray, labels: np.ndarray | None, ratios: tuple[float, float, float]) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) for each example, given its sort key and label id."""
    n = len(keys)
    if labels is None:
        position = np.zeros(n)
    else:
        position = np.empty(n)
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            ranked = members[np.argsort(keys[members], kind="stable")]
            position[ranked] = (np.arange(len(ranked)) + 0.5) / len(ranked)
    order = np.lexsort((keys, position))
    assignment = np.empty(n, dtype=np.int8)
    start = 0
    for index, size in enumerate(split_sizes(n, ratios)):
        assignment[order[start : start + size]] = index
        start += size
    return assignment


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: dict) -> Path:
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def verify_manifest(directory: Path) -> list[str]:
    """Problems found re-hashing the outputs a manifest lists; empty when everything verifies."""
    path = directory / MANIFEST
    if not path.exists():
        raise UsageError(
            f"{directory}: no {MANIFEST}", fix="Point at a directory written by `tuneforge data prepare`."
        )
    manifest = json.loads(path.read_text())
    problems = []
    for name, entry in manifest["outputs"].items():
        output = directory / entry["file"]
        if not output.exists():
            problems.append(f"{entry['file']}: missing")
        elif sha256_file(output) != entry["sha256"]:
            problems.append(f"{entry['file']}: sha256 differs from the manifest (the file changed)")
    return problems
