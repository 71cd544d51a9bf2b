"""Keeping a CPU training process's resident memory near what it uses.

Two things made a LoRA run's RSS grow step after step (measured on SmolLM2-135M, 8 x 256 tokens,
benchmarks/RESULTS.md), while its live tensors stayed at 312 MB:

- Kernel caches (bounded by `hardware.bound_kernel_caches`). oneDNN (the bf16 matmuls) keeps a
  compiled primitive for every matrix shape it has seen, and PyTorch's ideep layer an LRU cache of
  its own on top; both hold up to 1,024 entries by default. Padding-free batches have a new token
  count, so new shapes, at nearly every step: the two caches grew the process by ~37 MB per step.
  One step needs a few dozen shapes, so a capacity of 64 keeps every hit within a step (no slower,
  measured) and bounds the growth.
- The C allocator. glibc serves the step's many 1-6 MB activations from its heap and keeps the
  freed pages; with a new mix of sizes each step, holes it cannot reuse pile up. `malloc_trim`
  hands the free pages back. Not after every step, though: the next step then faults every page of
  its activations in again, zero-filled by the kernel (~330 k page faults, ~0.9 s of system time
  per LoRA step: 10 % of its speed). `HeapGrowthGuard` trims only when the process has grown
  past what an untrimmed step leaves by a slack (256 MB).
"""

import ctypes
import ctypes.util
import os

_trim = None


def release_free_memory() -> None:
    """Give the allocator's free pages back to the OS (glibc's malloc_trim); a no-op elsewhere."""
    global _trim
    if _trim is None:
        name = ctypes.util.find_library("c")
        library = ctypes.CDLL(name) if name else None
        _trim = getattr(library, "malloc_trim", False) if library else False
    if _trim:
        _trim(0)


def resident_mb() -> float:
    """This process's resident memory now (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


class HeapGrowthGuard:
    """Called after each training step: trims the heap when the process holds `slack_mb` more than
    it did after the first step since the last trim (the level a step's freed activations leave)."""

    def __init__(self, slack_mb: float = 256):
        self.slack_mb = slack_mb
        self.settled_mb: float | None = None

    def after_step(self) -> bool:
        """True when it trimmed."""
        resident = resident_mb()
        if self.settled_mb is None:
            self.settled_mb = resident
            return False
        if resident <= self.settled_mb + self.slack_mb:
            return False
        release_free_memory()
        self.settled_mb = None
        return True
