"""Training speed and memory on the bundled model: TRL vs a plain PyTorch loop vs Tuneforge.

Run: `python -m benchmarks.train [--steps 16] [--batch-size 8] [--seq-len 256] [--method lora|full|both]`
(TRL is not a Tuneforge dependency: `pip install -e '.[bench]'` installs it.)

Every row trains SmolLM2-135M-Instruct in its own process (so its peak RSS is its own) on the same
synthetic multi-turn support chats of ~`--seq-len` tokens (built from examples/support_chat.jsonl,
see `train_runners.build_data`), with the same learning rate (LoRA 2e-4, full 1e-5, constant),
AdamW, clipping at 1.0, `--batch-size` chats per step, LoRA r=16 alpha=32 on all linear layers,
and loss on every token (TRL's default for chat data) unless a row says otherwise.

TRL runs as first benchmarked (`packing=True`, AdamW "adamw_torch") and as a careful user would run
it: with the fused AdamW ("adamw_torch_fused", SFTConfig's own default), packed or not. TRL 1.16's
packing is always padding-free, and on CPU its SDPA mask is then one dense block-diagonal matrix
over the whole packed row (tokens x tokens): several times the attention work of separate chats.
Every ratio printed at the end is against the best row of each kind (by all tok/s), whatever its
options or precision: Tuneforge's best row against TRL's best and the plain loop's best.

Columns: trained tok/s counts tokens that carry loss, all tok/s every real (non-padding) token the
model reads, both over the steady state (the first two steps, with one-off allocation or compilation,
left out); s/epoch is one pass over the training chats at that speed plus the first steps' extra time
(so a compile is counted once per run); MFU is all tok/s x 4N (LoRA) or 6N (full) FLOPs over the
matmul ceiling measured at the start, fp32 or bf16 to match the row; training peak RSS is the
process's peak when training ends, peak RSS its peak after the validation pass too; train loss is
the mean of the last four steps; validation loss is computed by one function for every trainer (fp32).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARAMETERS = 134_515_008  # SmolLM2-135M, embeddings tied
WARMUP_STEPS = 2

FUSED = {"optim": "adamw_torch_fused"}
LORA_ROWS = [
    ("TRL SFTTrainer + PEFT, packing, fp32", {"trainer": "trl", "precision": "fp32"}),
    ("TRL SFTTrainer + PEFT, packing, bf16", {"trainer": "trl", "precision": "bf16"}),
    ("TRL SFTTrainer + PEFT, packing, fused AdamW, fp32", {"trainer": "trl", "precision": "fp32", **FUSED}),
    ("TRL SFTTrainer + PEFT, packing, fused AdamW, bf16", {"trainer": "trl", "precision": "bf16", **FUSED}),
    (
        "TRL SFTTrainer + PEFT, no packing, fused AdamW, fp32",
        {"trainer": "trl", "precision": "fp32", "packing": False, **FUSED},
    ),
    (
        "TRL SFTTrainer + PEFT, no packing, fused AdamW, bf16",
        {"trainer": "trl", "precision": "bf16", "packing": False, **FUSED},
    ),
    ("plain transformers + PEFT loop, fp32", {"trainer": "plain", "precision": "fp32"}),
    ("plain transformers + PEFT loop, bf16 autocast", {"trainer": "plain", "precision": "bf16"}),
    ("Tuneforge, fp32", {"trainer": "tuneforge", "precision": "fp32"}),
    ("Tuneforge, bf16", {"trainer": "tuneforge", "precision": "bf16"}),
]
FULL_ROWS = [(label.replace(" + PEFT", ""), settings) for label, settings in LORA_ROWS]
PEERS = {"trl": "TRL", "plain": "the plain loop"}


def ratios(results: list[tuple[str, str, dict, dict]]) -> list[str]:
    """Per method: Tuneforge's best row against each peer's best row, by all tok/s.
    `results` holds (label, method, settings, summary) of the rows that ran."""
    lines = []
    for method in dict.fromkeys(m for _, m, _, _ in results):
        best = {}
        for label, m, settings, summary in results:
            kind = settings["trainer"]
            if m == method and (kind not in best or summary["all"] > best[kind][1]["all"]):
                best[kind] = (label, summary)
        if "tuneforge" not in best:
            continue
        ours_label, ours = best["tuneforge"]
        for kind, peer in PEERS.items():
            if kind in best:
                label, theirs = best[kind]
                lines.append(
                    f"{method}: {ours_label} ({ours['all']:.0f} all tok/s) = {ours['all'] / theirs['all']:.2f}x "
                    f"{peer}'s best row, {label} ({theirs['all']:.0f}); peak RSS "
                    f"{ours['train_rss']:,.0f} vs {theirs['train_rss']:,.0f} MB"
                )
    return lines


def rows_for(method: str, only: str | None) -> list[tuple[str, str, dict]]:
    """(label, method, settings) of each row to run."""
    methods = ["lora", "full"] if method == "both" else [method]
    rows = [(label, m, settings) for m in methods for label, settings in (LORA_ROWS if m == "lora" else FULL_ROWS)]
    return [row for row in rows if not only or only in row[0]]


def matmul_gflops(dtype_name: str) -> float:
    """The sustained matmul rate one process gets with torch's threads: Tuneforge's own measurement
    (hardware.py), on larger matrices and for longer than its quick start-up check."""
    from tuneforge.hardware import measure_matmul_gflops

    return measure_matmul_gflops(size=2048, seconds=2.0, dtype_name=dtype_name)


def one(settings: dict, data_dir: Path, steps: int, batch_size: int, seq_len: int) -> dict:
    """Train one row in this process; speed from its per-step times, memory from its peak RSS."""
    import warnings

    warnings.filterwarnings("ignore")
    from benchmarks.train_runners import RUNNERS, peak_rss_mb

    result = RUNNERS[settings["trainer"]](
        settings, data_dir / "train.jsonl", data_dir / "validation.jsonl", steps, batch_size, seq_len
    )
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def summarise(result: dict, epoch_tokens: int, flops_per_token: float, ceiling_gflops: float) -> dict:
    seconds, tokens, trained = result["step_seconds"], result["step_tokens"], result["step_trained"]
    skip = WARMUP_STEPS if len(seconds) > WARMUP_STEPS + 1 else 0
    steady = sum(seconds[skip:])
    all_rate, trained_rate = sum(tokens[skip:]) / steady, sum(trained[skip:]) / steady
    # The first steps' time beyond what the steady rate would have taken: allocation, compilation.
    warmup_extra = sum(s - n / all_rate for s, n in zip(seconds[:skip], tokens[:skip]))
    losses = result["train_losses"]
    return {
        "trained": trained_rate,
        "all": all_rate,
        "epoch_s": epoch_tokens / all_rate + warmup_extra,
        "mfu": all_rate * flops_per_token / (ceiling_gflops * 1e9),
        "rss": result["peak_rss_mb"],
        "train_rss": result["train_peak_rss_mb"],
        "train_loss": sum(losses[-4:]) / len(losses[-4:]),
        "valid_loss": result["valid_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=16,
        help="optimiser steps per row; the training set is one epoch of this many batches",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--method", choices=["lora", "full", "both"], default="both")
    parser.add_argument(
        "--lora-dropout", type=float, default=0.0, help="the same for every LoRA row (0: Tuneforge's default)"
    )
    parser.add_argument("--only", help="run only rows whose label contains this text")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        result = one(json.loads(args.one), Path(args.data_dir), args.steps, args.batch_size, args.seq_len)
        print(json.dumps(result))
        return

    from benchmarks.train_runners import build_data
    from tuneforge.models.catalog import model_path, resolve_model

    rows = rows_for(args.method, args.only)
    load = os.getloadavg()[0]
    ceilings = {"fp32": matmul_gflops("float32"), "bf16": matmul_gflops("bfloat16")}
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average {load:.1f} at start; "
        f"batch {args.batch_size} x {args.seq_len} tokens, {args.steps} steps per row; "
        f"matmul ceiling fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} GFLOP/s"
    )
    print(header, flush=True)
    lines = [
        "| configuration | trained tok/s | all tok/s | s/epoch | MFU | training peak RSS MB | peak RSS MB | train "
        "loss | valid loss | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as home:
        data_dir = Path(home) / "data"
        # Converted model stays where it is; runs and the registry go to the throw-away home.
        env = {
            **os.environ,
            "TUNEFORGE_MODEL_CACHE": str(Path(model_path(resolve_model("smollm2-135m-instruct"))).parent),
            "TUNEFORGE_HOME": home,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        train_path, _ = build_data(data_dir, args.seq_len, args.steps * args.batch_size, 2 * args.batch_size)
        from benchmarks.train_runners import tokenized

        epoch_tokens = sum(len(e.input_ids) for e in tokenized(train_path, 1.0, args.seq_len))
        results = []
        for label, method, settings in rows:
            settings = {"method": method, "prompt_loss_weight": 1.0, "lora_dropout": args.lora_dropout, **settings}
            if method == "full":
                settings.pop("lora_dropout")
            row_load = os.getloadavg()[0]
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.train",
                    "--steps",
                    str(args.steps),
                    "--batch-size",
                    str(args.batch_size),
                    "--seq-len",
                    str(args.seq_len),
                    "--one",
                    json.dumps(settings),
                    "--data-dir",
                    str(data_dir),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if out.returncode != 0:
                lines.append(
                    f"| {label} ({method}) | failed: {(out.stderr.strip().splitlines() or ['?'])[-1][:150]} | | | | "
                    f"| | | | |"
                )
                print(lines[-1], flush=True)
                continue
            s = summarise(
                json.loads(out.stdout.strip().splitlines()[-1]),
                epoch_tokens,
                (4 if method == "lora" else 6) * PARAMETERS,
                ceilings[settings["precision"]],
            )
            results.append((label, method, settings, s))
            lines.append(
                f"| {label} ({method}) | {s['trained']:.0f} | {s['all']:.0f} | {s['epoch_s']:.0f} | {s['mfu']:.0%} | "
                f"{s['train_rss']:,.0f} | {s['rss']:,.0f} | {s['train_loss']:.3f} | {s['valid_loss']:.4f} | "
                f"{row_load:.1f} |"
            )
            print(lines[-1], flush=True)
    print()
    print(header + "\n\n" + "\n".join(lines))
    print("\n".join(["", *ratios(results)]))


if __name__ == "__main__":
    main()
