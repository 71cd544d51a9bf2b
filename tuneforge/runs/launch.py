"""Training on several processes: `torch.distributed.run` (torchrun) starts them, we start torchrun.

A run with `nproc` > 1 (or several machines) is launched, not called: this process starts
`python -m torch.distributed.run` with the run's config in the environment, and each process it
starts runs an entry (the CLI's hidden `tuneforge _rank`, or jobs/rank_main.py for the worker: they
report differently) that reads the config back and calls `train_run` as a lone process would. The
recipe finds its rank itself (train/distributed.py); rank 0 records the run.

Several machines: every machine runs the same `tuneforge train` with `--nnodes`, its own
`--node-rank`, and the first machine's `--master-addr`/`--master-port` (torchrun's static rendezvous).
"""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from tuneforge.errors import UsageError

PAYLOAD = "TUNEFORGE_LAUNCH"


@dataclass(frozen=True)
class Machines:
    """Where the processes are: this machine alone (the default), or one of `nodes` machines."""

    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def torchrun_options(self, nproc: int) -> list[str]:
        if self.nodes == 1:
            # A free port of its own, so two runs on one machine never collide.
            return ["--standalone", f"--nproc-per-node={nproc}"]
        return [
            f"--nproc-per-node={nproc}",
            f"--nnodes={self.nodes}",
            f"--node-rank={self.node_rank}",
            f"--master-addr={self.master_addr}",
            f"--master-port={self.master_port}",
        ]

    def check(self) -> None:
        if self.nodes < 1 or not 0 <= self.node_rank < self.nodes:
            raise UsageError(
                f"--node-rank {self.node_rank} is not one of the {self.nodes} machines (0..{self.nodes - 1})"
            )


def launched() -> bool:
    """Whether this process is one of those torchrun started."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", 1)) > 1


def launch(
    entry: list[str], payload: dict, nproc: int, machines: Machines = Machines(), should_stop=lambda: False
) -> int:
    """Run `python -m *entry` in `nproc` processes here through torchrun, each reading `payload`;
    the exit status of the whole (0, or non-zero when a process failed or was stopped).
    `should_stop()` is asked every second: when it says so, torchrun is sent SIGTERM, which it
    passes on to the processes, and they checkpoint and stop."""
    machines.check()
    command = [sys.executable, "-m", "torch.distributed.run", *machines.torchrun_options(nproc), "-m", *entry]
    environment = {**os.environ, PAYLOAD: json.dumps(payload, default=str)}
    # One thread per process unless the user chose: N processes x all cores would oversubscribe the CPU.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    process = subprocess.Popen(command, env=environment, preexec_fn=_stop_with_parent)
    # Ctrl-C reaches torchrun and its processes too (one process group): they checkpoint and stop;
    # this process waits for them instead of dying first.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = False
    try:
        while True:
            try:
                return process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if not stopping and should_stop():
                    # Once: a second SIGTERM would cut torchrun's own shutdown (and the checkpoint) short.
                    process.send_signal(signal.SIGTERM)
                    stopping = True
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_with_parent() -> None:
    """In torchrun's process, before it starts: SIGTERM when this process dies (Linux's parent-death
    signal), so a worker killed outright does not leave a run training on that no one records; torchrun
    passes the SIGTERM on, and the processes checkpoint and stop."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def payload(config, run_id: str, resume: bool, project: str, org: str, **extra) -> dict:
    """What each launched process needs to call `train_run` again (a resumed run's config is its
    record: every field, validated as recorded)."""
    return {
        "config": config.model_dump(mode="json", exclude_unset=not resume),
        "run_id": run_id,
        "resume": resume,
        "project": project,
        "org": org,
        **extra,
    }


def read_payload() -> dict:
    try:
        return json.loads(os.environ[PAYLOAD])
    except (KeyError, ValueError):
        raise UsageError("this module is started by `tuneforge train --nproc N`, not on its own") from None
