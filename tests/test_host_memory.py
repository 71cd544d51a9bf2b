"""train/host_memory.py: bounded kernel caches and trimming the C allocator between steps."""

import ctypes.util
import os
import sys

import pytest

from tuneforge.hardware import KERNEL_CACHE_CAPACITY, bound_kernel_caches
from tuneforge.train.host_memory import HeapGrowthGuard, release_free_memory, resident_mb


def test_kernel_caches_are_bounded_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    bound_kernel_caches()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == KERNEL_CACHE_CAPACITY
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc's malloc_trim"
)
def test_release_free_memory_hands_freed_heap_pages_back():
    # 100 KB blocks come from glibc's heap (under its mmap threshold); the last one, kept, pins the
    # heap's top, so only malloc_trim can give the pages of the freed ones back.
    blocks = [bytearray(100_000) for _ in range(3000)]
    kept = blocks[-1]
    del blocks
    before = resident_mb()
    release_free_memory()
    assert before - resident_mb() > 150, (before, resident_mb())
    assert len(kept) == 100_000


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc's malloc_trim"
)
def test_heap_growth_guard_trims_only_when_the_process_has_grown_past_the_slack():
    guard = HeapGrowthGuard(slack_mb=100)
    assert guard.after_step() is False  # the first step sets the level
    small = [bytearray(100_000) for _ in range(300)]  # 30 MB more: within the slack
    assert guard.after_step() is False
    blocks = [bytearray(100_000) for _ in range(3000)]  # 300 MB of heap, then freed but pinned by the last
    kept = blocks[-1]
    del blocks
    before = resident_mb()
    assert guard.after_step() is True
    assert before - resident_mb() > 150, (before, resident_mb())
    assert guard.after_step() is False  # the step after a trim sets the level again
    assert len(kept) == len(small[0]) == 100_000
