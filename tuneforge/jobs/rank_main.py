"""One of the processes of a job with `nproc` > 1: the worker starts them through torchrun
(runs/launch.py), and each calls `train_run` as the worker would. Rank 0 writes the job's events and
watches its status (cancel, pause); the others only train.

Run by the worker: `python -m torch.distributed.run ... -m tuneforge.jobs.rank_main`.
"""

import logging
import sys

from tuneforge.errors import TuneforgeError
from tuneforge.jobs.reporter import JobReporter
from tuneforge.registry import jobs
from tuneforge.runs.training import train_launched
from tuneforge.train import distributed


def main() -> int:
    from tuneforge.hardware import bound_kernel_caches

    bound_kernel_caches()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # as the CLI's main: see cli/__init__.py
    try:
        train_launched(lambda payload: JobReporter(jobs.get_job(None, payload["job_id"])))
    except TuneforgeError as error:
        # The run's row says what happened (the worker reads it); rank 0 also says it on stderr.
        if distributed.ranks().main:
            print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
