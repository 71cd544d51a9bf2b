"""Job execution: the worker process that carries out queued fine-tuning jobs (worker.py) and the
reporter that turns a run's progress into job events (reporter.py). The queue itself is rows in the
registry (registry/jobs.py); the server only writes them."""
