"""Fine-tuning jobs: storing the files they train on (files.py: an upload's bytes and row, and the data
check of a fine-tuning file), submitting and steering them (submit.py: what the jobs API asks of the
queue, checked before a row is written; cancel, pause and resume as guarded status changes), and
carrying them out (worker.py, the process that trains them; reporter.py, progress as job events). The
queue itself is rows in the registry (registry/jobs.py)."""
