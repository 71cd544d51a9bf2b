"""Speed and memory measurements, run by hand (`python -m benchmarks.NAME`); results in RESULTS.md."""
