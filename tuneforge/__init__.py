"""Tuneforge: self-hosted fine-tuning for open language models.

The pipeline's stages, one package each: `data` (files in, canonical examples out), `train`,
`evaluate`, with `inference` shared; `runs` records their calls, `jobs` carries out queued work, and
the CLI (`tuneforge ...`) and the server (`serve`) are the doors. docs/ARCHITECTURE.md has the map.
Importing tuneforge changes nothing in the process: settings that must come first (the CPU kernel
caches) are applied where a process starts work (the CLI's `main`).
"""

__version__ = "0.1.0"
