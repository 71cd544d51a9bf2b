"""Speed and memory measurements, run by hand (`python -m benchmarks.NAME`); results in RESULTS.md."""

from tuneforge.hardware import bound_kernel_caches

bound_kernel_caches()  # as the CLI does at start: the measured trainer runs with bounded kernel caches
