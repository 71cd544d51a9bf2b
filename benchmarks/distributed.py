"""Several processes on one CPU: `tuneforge train --nproc 2` (DDP, 1 thread each) vs one process with
all threads, on the bundled model.

Run: `python -m benchmarks.distributed [--steps 12] [--batch-size 8] [--seq-len 256] [--method lora|full]`

Each row is the real CLI (`tuneforge train`, through torchrun for --nproc > 1) on the CPU benchmark's
synthetic support chats (`train_runners.build_data`: batches of `--batch-size` chats of ~`--seq-len`
tokens), bf16 where the CPU has it, `--max-steps` steps. tok/s is the run's own per-step rate
(metrics.csv: all real tokens of the global batch over the step's wall time), the median of the
steps after the first two; the final train loss shows the rows trained the same thing (the same
global batch each step, split between the processes).
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WARMUP_STEPS = 2
ROWS = [
    ("1 process x 2 threads", {"nproc": 1, "threads": 2}),
    ("2 processes x 1 thread (DDP, gloo)", {"nproc": 2, "threads": 1}),
]


def run_row(settings: dict, data: Path, home: Path, args) -> dict:
    environment = {**os.environ, "TUNEFORGE_HOME": str(home), "OMP_NUM_THREADS": str(settings["threads"])}
    command = [
        sys.executable, "-m", "tuneforge", "train", "--data", str(data), "--method", args.method,
        "--batch-size", str(args.batch_size), "--max-steps", str(args.steps), "--n-epochs", "1",
        "--max-seq-length", str(args.seq_len), "--nproc", str(settings["nproc"]), "--no-cache-tokens",
        "--validation-split", "0",
        "--suffix", f"bench-nproc-{settings['nproc']}",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    if finished.returncode:
        raise SystemExit(f"row failed:\n{finished.stderr[-3000:]}")
    run_dir = max((home / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    with (run_dir / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["train_loss"]]
    rates = [float(r["tokens_per_second"]) for r in rows[WARMUP_STEPS:]]
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "tokens_per_second": statistics.median(rates),
        "final_loss": float(rows[-1]["train_loss"]),
        "precision": config["precision"],
        "steps": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    args = parser.parse_args()
    from benchmarks.train_runners import build_data

    with tempfile.TemporaryDirectory() as scratch:
        data, _ = build_data(Path(scratch) / "data", args.seq_len, args.batch_size * args.steps, 8)
        results = []
        for label, settings in ROWS:
            results.append((label, run_row(settings, data, Path(scratch) / f"home-{settings['nproc']}", args)))
    base = results[0][1]["tokens_per_second"]
    print(f"\n{args.method}, {args.steps} steps of {args.batch_size} x ~{args.seq_len} tokens\n")
    print("| row | precision | tok/s (median after 2 steps) | vs 1 process | final train loss |")
    print("|---|---|---|---|---|")
    for label, result in results:
        print(
            f"| {label} | {result['precision']} | {result['tokens_per_second']:.0f} | "
            f"{result['tokens_per_second'] / base:.2f}x | {result['final_loss']:.4f} |"
        )


if __name__ == "__main__":
    main()
