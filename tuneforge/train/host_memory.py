"""Keeping a CPU training process's resident memory near what it uses.

Two things made a LoRA run's RSS grow step after step (measured on SmolLM2-135M, 8 x 256 tokens,
benchmarks/RESULTS.md), while its live tensors stayed at 312 MB:

- Kernel caches. oneDNN (the bf16 matmuls) keeps a compiled primitive for every matrix shape it
  has seen, and PyTorch's ideep layer an LRU cache of its own on top; both hold up to 1,024
  entries by default. Padding-free batches have a new token count, so new shapes, at nearly every
  step: the two caches grew the process by ~37 MB per step. One step needs a few dozen shapes, so
  a capacity of 64 keeps every hit within a step (no slower, measured) and bounds the growth.
- The C allocator. glibc serves the step's many 1-6 MB activations from its heap and keeps the
  freed pages; with a new mix of sizes each step, holes it cannot reuse pile up. `malloc_trim`
  after each step hands the free pages back (~1 ms), so each step starts from the same footprint.
"""

import ctypes
import ctypes.util
import os

KERNEL_CACHE_CAPACITY = "64"


def bound_kernel_caches() -> None:
    """Cap the kernel caches unless the user set them; read by oneDNN and PyTorch at first use, so
    this runs when tuneforge is imported (before any matmul)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_CAPACITY)
    os.environ.setdefault("LRU_CACHE_CAPACITY", KERNEL_CACHE_CAPACITY)


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
