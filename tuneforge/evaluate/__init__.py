"""Stage 3: evaluation. metrics.py so far; the eval command, A/B and the report come next (issue 4)."""
