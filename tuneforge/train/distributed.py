"""One recipe on many processes: torch.distributed as torchrun starts it (DDP for LoRA, FSDP2 for full).

`tuneforge train --nproc N` (runs/launch.py) starts N copies of the recipe through
`torch.distributed.run`; each finds its rank in the environment torchrun sets (RANK, WORLD_SIZE,
LOCAL_RANK). Everything else follows from one rule: **a step's global batch is the one-process
run's batch**, split between the ranks. Every rank has the whole dataset and draws the same seeded
epoch order, takes every world-th example of each batch, and divides its weighted loss by the whole
batch's loss weight (known to every rank from the examples themselves, no communication), times the
world size because DDP and FSDP average gradients over ranks. The sum over ranks is then exactly the
one-process gradient, and the same optimiser step follows on every rank.

Collectives must be called by every rank the same number of times, so each rank runs the same number
of micro-batches: a rank whose share of a batch is short runs a copy of one of the batch's examples
with its loss scaled by 0 (a forward and backward that contribute nothing). Step metrics and the stop
flag (Ctrl-C, a job's cancel or pause, seen by rank 0) are summed over ranks in one all-reduce.

Rank 0 alone writes the run directory and reports; the others report nothing.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tuneforge.hardware import device_type


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def ranks() -> Ranks:
    """This process's place among the processes torchrun started (a lone process: rank 0 of 1)."""
    return Ranks(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def start(device: str, place: Ranks) -> str:
    """Join the process group (gloo on CPU, NCCL on GPUs) and return this rank's device: a CUDA run
    uses the GPU of its local rank."""
    if device_type(device) == "cuda" and ":" not in device:
        device = f"cuda:{place.local_rank}"
    if device_type(device) == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device_type(device) == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=torch.device(device) if backend == "nccl" else None)
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def share(examples: list, place: Ranks) -> list:
    """This rank's part of a global batch: every world-th example (batches grouped by length are
    sorted, so round-robin gives each rank a similar number of tokens)."""
    return examples[place.rank :: place.world]


def micro_batches(share_: list, batch_size: int, parts: int, place: Ranks) -> list[tuple[list, float]]:
    """This rank's micro-batches of one step, each with the factor its loss is scaled by (0 for a
    filler). One process keeps the single-process split; many processes all run the same number."""
    if not place.distributed:
        size = -(-len(share_) // parts)
        return [(share_[i : i + size], 1.0) for i in range(0, len(share_), size)]
    most = -(-batch_size // place.world)  # the largest share any rank has of this batch
    size = -(-most // parts)
    count = -(-most // size)
    chunks = [share_[i * size : (i + 1) * size] for i in range(count)]
    return [(chunk, 1.0) if chunk else (None, 0.0) for chunk in chunks]


def sum_over_ranks(values: list[float], device: str) -> list[float]:
    """Each value summed over all ranks (one all-reduce); unchanged in a lone process."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool, device: str) -> bool:
    """Rank 0's flag, on every rank."""
    if not dist.is_initialized():
        return flag
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(tensor, 0)
    return bool(tensor.item())
