"""Tuneforge: self-hosted fine-tuning for open language models.

The pipeline has four stages, one package each: `data` (files in, canonical examples out),
`train`, `evaluate` and `serve`. The CLI (`tuneforge ...`) is a thin door into them.
"""

__version__ = "0.1.0"

from tuneforge.train.host_memory import bound_kernel_caches

bound_kernel_caches()  # before torch runs its first matmul: see train/host_memory.py
