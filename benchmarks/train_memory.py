"""Where a training step's memory goes: Tuneforge's LoRA trainer on the bundled model, step by step.

Run: `python -m benchmarks.train_memory [--steps 6] [--precision bf16] [--method lora] [--chunk-tokens N]
     [--no-lean] [--trim grown|every|never]`

Trains `--steps` steps of 8 x 256-token chats (the data of benchmarks/train.py) and prints, per step:
the tokens, the bytes of the tensors autograd kept for backward at the end of the forward pass
(grouped by last dimension and dtype: 1536 wide is the MLP, 576 the hidden states, 64 attention),
the RSS at that moment, the RSS after the step, the process's peak RSS so far, glibc's heap in use
and the step's tokens/s. Allocator experiments go through the environment, e.g.
`MALLOC_MMAP_THRESHOLD_=2097152 python -m benchmarks.train_memory`.
"""

import argparse
import collections
import ctypes
import os
import tempfile
import time
from pathlib import Path

import torch


def heap_in_use_mb() -> float | None:
    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    return libc.mallinfo2().uordblks / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--chunk-tokens", type=int, help="the chunked loss's chunk (default: Tuneforge's)")
    parser.add_argument("--no-lean", action="store_true", help="lean_activations off")
    parser.add_argument(
        "--trim",
        choices=["grown", "every", "never"],
        default="grown",
        help="malloc_trim when the process has grown past the slack (the trainer's), after every step, or never",
    )
    args = parser.parse_args()
    os.environ.setdefault("TUNEFORGE_HOME", tempfile.mkdtemp(prefix="tuneforge-memory-"))

    import tuneforge.train.chunked_loss as chunked_loss
    import tuneforge.train.host_memory as host_memory
    import tuneforge.train.sft as sft
    from benchmarks.train_runners import MODEL, SEED, build_data, peak_rss_mb
    from tuneforge.train.config import TrainConfig

    if args.chunk_tokens:
        chunked_loss.CHUNK_TOKENS = args.chunk_tokens
    from tuneforge.train.host_memory import resident_mb as rss_mb

    if args.trim != "grown":

        class FixedTrim:
            def after_step(self):
                if args.trim == "every":
                    host_memory.release_free_memory()

        sft.HeapGrowthGuard = FixedTrim
    train, _ = build_data(Path(os.environ["TUNEFORGE_HOME"]) / "data", 256, args.steps * 8, 16)
    kept = {}
    loss = sft.weighted_token_loss

    def measured_loss(model, batch, *rest, **options):
        storages = {}

        def keep(tensor):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = (
                storage.nbytes(),
                tensor.shape[-1] if tensor.dim() else 0,
                str(tensor.dtype).replace("torch.", ""),
            )
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            result = loss(model, batch, *rest, **options)
        kinds = collections.Counter()
        for nbytes, width, dtype in storages.values():
            kinds[f"{width} {dtype}"] += nbytes
        kept.update(
            tokens=batch.tokens, saved=sum(kinds.values()), kinds=kinds.most_common(4), rss_forward_end=rss_mb()
        )
        return result

    sft.weighted_token_loss = measured_loss

    from tuneforge.runs.training import train_run
    from tuneforge.train.reporter import Reporter

    class Report(Reporter):
        def step(self, row):
            heap = heap_in_use_mb()
            kinds = ", ".join(f"{kind}: {nbytes / 2**20:.0f}" for kind, nbytes in kept["kinds"])
            print(
                f"| {row['step']} | {kept['tokens']} | {kept['saved'] / 2**20:,.0f} ({kinds}) | "
                f"{kept['rss_forward_end']:,.0f} | "
                f"{rss_mb():,.0f} | {peak_rss_mb():,.0f} | "
                f"{'-' if heap is None else f'{heap:,.0f}'} | {row['tokens_per_second']:.0f} |",
                flush=True,
            )

    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}; {args.method} {args.precision}; lean_activations {not args.no_lean}; "
        f"chunk {chunked_loss.CHUNK_TOKENS}; trim {args.trim}; kernel caches "
        f"{os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')}/{os.environ.get('LRU_CACHE_CAPACITY')}; RSS after "
        f"imports {rss_mb():.0f} MB\n"
    )
    print(
        "| step | tokens | kept for backward MB (largest kinds) | RSS at forward end MB | RSS after step MB | peak "
        "RSS MB | heap in use MB | tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    config = TrainConfig(
        model=MODEL,
        data=train,
        n_epochs=1,
        max_steps=args.steps,
        batch_size=8,
        max_seq_length=256,
        method=args.method,
        precision=args.precision,
        lean_activations=not args.no_lean,
        learning_rate_multiplier=0.1,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        seed=SEED,
    )
    train_run(config, Report())
    host_memory.release_free_memory()


if __name__ == "__main__":
    main()
