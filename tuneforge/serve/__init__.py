"""Stage 4: inference (engine.py) and, later, the OpenAI-compatible server."""
