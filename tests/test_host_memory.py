"""train/host_memory.py: bounded kernel caches and trimming the C allocator between steps."""

import ctypes.util
import os
import sys

import pytest

from tuneforge.train.host_memory import KERNEL_CACHE_CAPACITY, bound_kernel_caches, release_free_memory


def test_kernel_caches_are_bounded_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "7")
    bound_kernel_caches()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == KERNEL_CACHE_CAPACITY
    assert os.environ["LRU_CACHE_CAPACITY"] == "7"


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc's malloc_trim")
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
