"""Duplicate detection gives the same answer in memory and spilled to disk."""

import random

from tuneforge.data.dedupe import DuplicateIndex


def build(memory_entries: int, pairs) -> DuplicateIndex:
    index = DuplicateIndex(memory_entries=memory_entries)
    for content_hash, line in pairs:
        index.add(content_hash, line)
    return index


def test_spilled_and_in_memory_detection_agree():
    rng = random.Random(0)
    hashes = [rng.getrandbits(64) for _ in range(3000)]
    pairs = [
        (hashes[rng.randrange(3000)] if rng.random() < 0.1 else rng.getrandbits(64), line) for line in range(1, 5001)
    ]
    in_memory = build(1 << 20, pairs).duplicates(keep=50)
    spilled = build(700, pairs).duplicates(keep=50)  # spills 7 times
    assert spilled == in_memory
    assert in_memory[0] > 0


def test_each_repeat_names_the_first_occurrence():
    pairs = [(7, 1), (8, 2), (7, 3), (7, 4), (8, 5)]
    assert build(2, pairs).duplicates(keep=10) == (3, [(3, 1), (4, 1), (5, 2)])
    assert build(100, pairs).duplicates(keep=2) == (3, [(3, 1), (4, 1)])
