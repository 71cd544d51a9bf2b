"""Tuneforge's trainer on the bundled model: tokens/s and peak memory, LoRA and full fine-tuning.

Run: `python -m benchmarks.train_speed [--steps 12] [--batch-size 8]`

Each configuration trains in its own process (so its peak RSS is its own) on examples/support_chat.jsonl
for `--steps` optimiser steps, and the table reports the steady-state speed (the first two steps,
which include one-off allocation, are left out), all tokens and loss-weighted tokens per second,
MFU against this machine's measured fp32/bf16 matmul ceilings at 4N (LoRA) or 6N (full) FLOPs per
token, and the process's peak RSS.
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support_chat.jsonl"
CONFIGS = [
    ("LoRA fp32, plain path", {"method": "lora", "precision": "fp32", "sparse_output_layer": False, "group_by_length": False}),
    ("LoRA fp32", {"method": "lora", "precision": "fp32"}),
    ("LoRA bf16 autocast", {"method": "lora", "precision": "bf16"}),
    ("full fp32", {"method": "full", "precision": "fp32"}),
    ("full bf16 autocast", {"method": "full", "precision": "bf16"}),
]


def matmul_gflops(dtype_name: str, size: int = 2048, seconds: float = 1.0) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


def one(settings: dict, steps: int, batch_size: int) -> dict:
    """Train in this process; report speed from metrics.csv and this process's peak RSS."""
    import warnings

    warnings.filterwarnings("ignore")
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.sft import train_sft

    result = train_sft(TrainConfig(data=EXAMPLES, max_steps=steps, batch_size=batch_size, n_epochs=1, **settings))
    with (result.run_dir / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row["train_loss"]][2:]  # steady state
    tokens = sum(int(r["tokens"]) for r in rows)
    seconds = sum(int(r["tokens"]) / float(r["tokens_per_second"]) for r in rows)
    tokens_per_second = tokens / seconds
    return {"tokens_per_second": tokens_per_second, "final_loss": float(rows[-1]["train_loss"]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": 134_515_008}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one), args.steps, args.batch_size)))
        return
    ceilings = {"fp32": matmul_gflops("float32"), "bf16": matmul_gflops("bfloat16")}
    lines = [f"Trainer speed on the bundled model, {os.cpu_count()} cores, batch {args.batch_size}, "
             f"{args.steps} steps ({time.strftime('%Y-%m-%d')}); matmul ceiling fp32 {ceilings['fp32']:.0f} GFLOP/s, "
             f"bf16 {ceilings['bf16']:.0f} GFLOP/s", "",
             "| configuration | tokens/s | MFU | peak RSS MB | loss at last step |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "TUNEFORGE_HOME": home, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        for label, settings in CONFIGS:
            out = subprocess.run([sys.executable, "-m", "benchmarks.train_speed", "--steps", str(args.steps),
                                  "--batch-size", str(args.batch_size), "--one", json.dumps(settings)],
                                 capture_output=True, text=True, env=env)
            if out.returncode != 0:
                lines.append(f"| {label} | failed: {out.stderr.strip().splitlines()[-1]} | | | |")
                continue
            m = json.loads(out.stdout.strip().splitlines()[-1])
            flops_per_token = (4 if settings["method"] == "lora" else 6) * m["parameters"]
            mfu = m["tokens_per_second"] * flops_per_token / (ceilings[settings["precision"]] * 1e9)
            lines.append(f"| {label} | {m['tokens_per_second']:.0f} | {mfu:.0%} | {m['peak_rss_mb']:,.0f} | {m['final_loss']:.3f} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
