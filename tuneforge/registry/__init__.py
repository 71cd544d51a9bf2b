"""The registry (store.py): datasets, runs, checkpoints and models, shared by the CLI, worker and server."""
