"""Stage 1: files in, canonical examples out.

reader.py (lines and records) -> formats.py (detect, convert to examples.py's canonical types) ->
checks.py (findings and statistics) -> clean.py (normalise, redact) -> split.py / prepare.py
(deduplicated, split, hashed dataset). tokenize.py turns examples into token ids and loss weights.
"""
