"""Generation shared by evaluate, the CLI and the server: the engine (engine.py), its decode loop
(decode.py), the fast llama step (fast_llama.py), adapters on a shared base (adapters.py), token ->
text deltas (text.py) and constrained JSON output (constrained.py). Knows no database and no HTTP."""
