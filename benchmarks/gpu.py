"""GPU training speed and memory: Tuneforge against TRL's SFTTrainer at its best, on a ~1 B llama model.

Run: `bash benchmarks/gpu.sh` on the GPU machine (installs the carried wheels, then runs this), or
`python -m benchmarks.gpu [--smoke] [--steps 16] [--batch-size 16] [--seq-len 1024] [--only TEXT] [--out DIR]`.
`--smoke` runs every row on the CPU with a tiny llama config (2 layers, hidden 64) for 3 steps, to
prove the script end to end on a machine without a GPU; its numbers mean nothing.

The model: a llama-architecture network built from a `LlamaConfig` and randomly initialised (nothing
can be downloaded on the GPU machine), saved with `save_pretrained` beside the bundled SmolLM2
tokenizer (vocabulary 49,152) into `.bench/model-*`: hidden 2048, 22 layers, MLP 5632, 32 heads with
4 KV heads (TinyLlama-1.1B's shape), embeddings tied to the output layer as in SmolLM2, 1.07 B
parameters. The tokenizer travels in `.bench/tokenizer` (written by `benchmarks/gpu_wheels.sh` from
the catalog's converted SmolLM2-135M-Instruct). A random model's loss says nothing about learning:
the train-loss column only shows that each row trained.

The data: `train_runners.build_data`'s synthetic multi-turn support chats, each filled to close to
`--seq-len` tokens, loss on every token, `--batch-size` chats per step; the training set is one batch
longer than the run, so no row reaches an epoch's end (Tuneforge would checkpoint there).

The rows, each in its own process (so its peak memory is its own), in this order:
  - LoRA (r=16, alpha=32, all linear layers, dropout 0), the frozen base in bf16, adapters fp32,
    bf16 autocast; full fine-tuning with fp32 master weights and bf16 autocast; QLoRA (an NF4 base
    through bitsandbytes, double quantisation, bf16 compute), for memory.
  - TRL 1.16 with the options a careful user picks on a GPU: bf16, the fused AdamW
    ("adamw_torch_fused"), `use_liger_kernel=True` where liger-kernel imports (its RMSNorm, SwiGLU and
    RoPE kernels; TRL's own chunked LM head computes the loss), no gradient checkpointing, and both
    batch layouts: padding-free (one flattened row, `padding_free=True`; without flash-attn installed
    transformers gives SDPA a block-diagonal mask over the whole row) and padded (an attention mask).
    The better of the two (by all tok/s) is the peer in every ratio printed.
  - Tuneforge through the CPU benchmark's runner (`train_runners.run_tuneforge`) with `device`,
    `gradient_checkpointing` and `load_in_4bit` passed as TrainConfig fields where this checkout has
    them; where it lacks one a row needs (device cuda before the device seam lands), the row is
    skipped with that reason rather than measured on the CPU.

Columns: trained/all tok/s over the steady state (the first two steps left out: allocation,
autotuning, Triton compilation); MFU is all tok/s x 4N (LoRA, QLoRA) or 6N (full) FLOPs, attention
not counted, over the H100/H200 SXM dense bf16 peak (989 TFLOP/s) and over the ~790 TFLOP/s that an
8192^3 bf16 matmul reached through PyTorch on the lent H200 (the run measures its own too and prints
it in the header); peak GPU memory is `torch.cuda.max_memory_allocated` in the row's process from
model load to the end of training. `--out` (default `$OUT`, else .bench/out) gets `gpu.md` (the table),
`gpu.json` (every row's settings, per-step times and tokens, summary) and `gpu.log` (each row's last
stderr lines), rewritten after every row, so a run cut short still leaves what it measured.

Time on one H200 (an estimate; no run yet): the eight rows' training is 16 steps x 16 x ~1,000 tokens
at 4N or 6N FLOPs per token, ~1.1e16 FLOPs, ~30 s at 45 % of 790 TFLOP/s. Each row's start dominates:
imports, loading 2 GB of weights (QLoRA quantises them), TRL's dataset pass, Triton compiles on the
first Liger row, Tuneforge's saved weights (4.3 GB for full): ~30-45 s a row, ~5-7 min in all. A row
gets at most `--row-timeout` seconds, and none starts once the `--deadline` is near.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
TOKENIZER_DIR = BENCH / "tokenizer"
WARMUP_STEPS = 2
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM
LENT_H200_MATMUL_TFLOPS = 790.0  # 8192^3 bf16 through PyTorch on the lent H200 (device KINDS.md)
BUDGET_EFFICIENCY = 0.45  # of the 790 TFLOP/s, for the run's time estimate

# TinyLlama-1.1B's shape with SmolLM2's vocabulary and tied embeddings: 1.07 B parameters.
MODEL_SHAPE = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
SMOKE_SHAPE = {
    **MODEL_SHAPE,
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}

TRL_BEST = {"trainer": "trl", "precision": "bf16", "packing": False, "optim": "adamw_torch_fused"}
PADDING_FREE, PADDED = {"padding_free": True}, {"padding_free": False}
LORA_BASE_BF16 = {"base_dtype": "bf16"}  # as Tuneforge's frozen_weights_bf16: the frozen base in bf16
TUNEFORGE = {"trainer": "tuneforge", "precision": "bf16"}
QLORA = {"load_in_4bit": True}
ROWS = [  # (label, method as the table names it, settings)
    ("TRL SFTTrainer + PEFT, padding-free", "lora", {**TRL_BEST, **PADDING_FREE, **LORA_BASE_BF16}),
    ("TRL SFTTrainer + PEFT, padded", "lora", {**TRL_BEST, **PADDED, **LORA_BASE_BF16}),
    ("Tuneforge", "lora", TUNEFORGE),
    ("TRL SFTTrainer, padding-free", "full", {**TRL_BEST, **PADDING_FREE}),
    ("TRL SFTTrainer, padded", "full", {**TRL_BEST, **PADDED}),
    ("Tuneforge", "full", TUNEFORGE),
    ("TRL SFTTrainer + PEFT, padding-free", "qlora", {**TRL_BEST, **PADDING_FREE, **QLORA}),
    ("Tuneforge", "qlora", {**TUNEFORGE, **QLORA}),
]


# ------------------------------------------------------------------------------ the model
def tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer: carried in .bench/tokenizer; made from the catalog where it is missing
    (a developer machine with the bundled model: what gpu_wheels.sh does)."""
    if not (TOKENIZER_DIR / "tokenizer_config.json").exists():
        from tuneforge.models.catalog import load_tokenizer

        load_tokenizer("smollm2-135m-instruct").save_pretrained(TOKENIZER_DIR)
    return TOKENIZER_DIR


def build_model(shape: dict, device: str) -> tuple[Path, int]:
    """A randomly initialised llama model with SmolLM2's tokenizer, saved in bf16 to .bench/model-*
    (reused when there already); returns its directory and parameter count (tied weights once)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )
    name = f"model-h{shape['hidden_size']}-l{shape['num_hidden_layers']}-v{config.vocab_size}"
    directory = BENCH / name
    if (directory / "config.json").exists() and (directory / "parameters.txt").exists():
        return directory, int((directory / "parameters.txt").read_text())
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1 B parameters is quicker on the GPU
        model = LlamaForCausalLM(config)
    parameters = sum(p.numel() for p in model.parameters())
    staging = directory.with_name(f"{name}.partial")
    model.to(torch.bfloat16).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "parameters.txt").write_text(str(parameters))
    staging.rename(directory)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return directory, parameters


def matmul_tflops(device: str) -> float:
    """bf16 matmul rate here, through Tuneforge's own measurement (hardware.py): 8192^3 products for
    half a second on a GPU, 1024^3 on a CPU."""
    import torch

    from tuneforge.hardware import measure_matmul_gflops

    size = 8192 if device.startswith("cuda") else 1024
    rate = measure_matmul_gflops(size, seconds=0.5, dtype_name="bfloat16", device=device) / 1000
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rate


# ------------------------------------------------------------------------------ one row (benchmarks.train.one)
def summarise(result: dict, flops_per_token: float, ceilings: dict[str, float]) -> dict:
    seconds, tokens, trained = result["step_seconds"], result["step_tokens"], result["step_trained"]
    skip = WARMUP_STEPS if len(seconds) > WARMUP_STEPS + 1 else 0
    steady = sum(seconds[skip:])
    all_rate = sum(tokens[skip:]) / steady
    losses = result["train_losses"]
    return {
        "trained": sum(trained[skip:]) / steady,
        "all": all_rate,
        "mfu": {name: all_rate * flops_per_token / (tflops * 1e12) for name, tflops in ceilings.items()},
        "gpu_peak_gib": result["gpu_peak_mb"] / 1024 if result.get("gpu_peak_mb") is not None else None,
        "train_rss_gib": result["train_peak_rss_mb"] / 1024,
        "train_loss": sum(losses[-2:]) / len(losses[-2:]) if losses else float("nan"),
        "steps": len(seconds),
        "tokens_per_step": sum(tokens) / len(tokens),
        "first_steps_s": sum(seconds[:skip]),
    }


def plan(args, device: str, liger_why: str | None, bnb_why: str | None) -> tuple[list[tuple], list[str]]:
    """The rows to run (label, method, settings) and what was left out or changed, and why."""
    notes, rows = [], []
    if liger_why:
        notes.append(f"liger-kernel does not import ({liger_why}): the TRL rows run without use_liger_kernel")
    for label, method, settings in ROWS:
        settings = {**settings, "device": device, "validate": False}
        if settings["trainer"] == "trl" and not liger_why:
            settings["use_liger_kernel"] = True
            label += ", Liger"
        if settings["trainer"] == "trl":
            label += ", fused AdamW"
        label += f", {settings['precision']}"
        if args.only and args.only not in f"{label} ({method})":
            continue
        if settings.get("load_in_4bit") and bnb_why:
            notes.append(f"skipped {label} ({method}): bitsandbytes does not import ({bnb_why})")
            continue
        if settings["precision"] == "bf16" and args.fp32:
            settings["precision"] = "fp32"
            settings.pop("base_dtype", None)
            label = label.replace("bf16", "fp32")
        rows.append((label, method, settings))
    return rows, notes


def import_problem(module: str) -> str | None:
    """None when `module` imports in a fresh process here, else the last line of why not."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    return None if out.returncode == 0 else (out.stderr.strip().splitlines() or ["?"])[-1][:200]


# ------------------------------------------------------------------------------ the table
def table(results: list[dict], ceilings: dict[str, float]) -> list[str]:
    names = list(ceilings)
    lines = [
        "| configuration | trained tok/s | all tok/s | "
        + " | ".join(f"MFU vs {name}" for name in names)
        + " | peak GPU GiB | training peak RSS GiB | train loss | steps | tokens/step |",
        "|---|---|---|" + "---|" * len(names) + "---|---|---|---|---|",
    ]
    for row in results:
        label = f"{row['label']} ({row['method']})"
        if row["status"] != "ok":
            lines.append(f"| {label} | {row['status']}: {row['reason']} |" + " |" * (len(names) + 7))
            continue
        s = row["summary"]
        gpu = f"{s['gpu_peak_gib']:.1f}" if s["gpu_peak_gib"] is not None else "-"
        lines.append(
            f"| {label} | {s['trained']:,.0f} | {s['all']:,.0f} | "
            + " | ".join(f"{s['mfu'][name]:.1%}" for name in names)
            + f" | {gpu} | {s['train_rss_gib']:.1f} | {s['train_loss']:.3f} | {s['steps']} | "
            f"{s['tokens_per_step']:,.0f} |"
        )
    return lines


def ratios(results: list[dict]) -> list[str]:
    """Per method: Tuneforge against TRL's best row (by all tok/s), speed and peak GPU memory."""
    lines = []
    for method in dict.fromkeys(row["method"] for row in results):
        ran = [row for row in results if row["method"] == method and row["status"] == "ok"]
        trl = max(
            (r for r in ran if r["settings"]["trainer"] == "trl"), key=lambda r: r["summary"]["all"], default=None
        )
        ours = next((r for r in ran if r["settings"]["trainer"] == "tuneforge"), None)
        if not (trl and ours):
            continue
        a, b = ours["summary"], trl["summary"]
        memory = (
            f"; peak GPU {a['gpu_peak_gib']:.1f} vs {b['gpu_peak_gib']:.1f} GiB"
            if a["gpu_peak_gib"] is not None and b["gpu_peak_gib"] is not None
            else ""
        )
        lines.append(
            f"{method}: Tuneforge {a['all']:,.0f} all tok/s = {a['all'] / b['all']:.2f}x TRL's best row "
            f"({trl['label']}, {b['all']:,.0f}){memory}"
        )
    return lines


def write_out(out: Path, header: str, notes: list[str], results: list[dict], ceilings: dict, log: list[str]) -> str:
    text = "\n".join([header, "", *table(results, ceilings), "", *ratios(results), "", *notes])
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.md").write_text(text + "\n")
    (out / "gpu.json").write_text(json.dumps({"header": header, "notes": notes, "rows": results}, indent=1))
    (out / "gpu.log").write_text("\n".join(log)[-2_000_000:])
    return text


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 3 steps per row")
    parser.add_argument("--steps", type=int, help="optimiser steps per row (default 16; smoke 3)")
    parser.add_argument("--batch-size", type=int, help="chats per step (default 16; smoke 2)")
    parser.add_argument("--seq-len", type=int, help="tokens per chat at most (default 1024; smoke 128)")
    parser.add_argument("--fp32", action="store_true", help="every row in fp32 (a CPU without bf16)")
    parser.add_argument("--only", help="run only rows whose label (with its method) contains this text")
    parser.add_argument("--row-timeout", type=int, help="seconds one row may take (default 240; smoke 900)")
    parser.add_argument(
        "--deadline",
        type=int,
        help="seconds for the whole run (default 540; smoke 3600): a row that cannot get 30 s more is skipped",
    )
    parser.add_argument("--out", help="where gpu.md, gpu.json, gpu.log go (default $OUT, else .bench/out)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (3 if args.smoke else 16)
    batch_size = args.batch_size or (2 if args.smoke else 16)
    seq_len = args.seq_len or (128 if args.smoke else 1024)
    if args.one:
        from benchmarks.train import one  # the CPU benchmark's row, the same runners

        result = one(json.loads(args.one), Path(args.data_dir), steps, batch_size, seq_len)
        print(json.dumps(result))
        return

    started = time.perf_counter()
    deadline = args.deadline or (3600 if args.smoke else 540)
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        raise SystemExit("no CUDA GPU here: run with --smoke to check the script on the CPU")
    out = Path(args.out or os.environ.get("OUT") or BENCH / "out")
    gpu_name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    measured = matmul_tflops(device)
    ceilings = {f"{measured:.3g} measured now": measured}
    peak = next((tflops for key, tflops in PEAK_TFLOPS.items() if key in gpu_name), None)
    if peak:
        ceilings = {f"{peak:.0f} peak": peak, f"{LENT_H200_MATMUL_TFLOPS:.0f} matmul": LENT_H200_MATMUL_TFLOPS}
    model_dir, parameters = build_model(SMOKE_SHAPE if args.smoke else MODEL_SHAPE, device)
    rows, notes = plan(args, device, import_problem("liger_kernel.transformers"), import_problem("bitsandbytes"))
    tokens_per_step = batch_size * seq_len  # at most
    estimate = sum(steps * tokens_per_step * (6 if method == "full" else 4) * parameters for _, method, _ in rows) / (
        BUDGET_EFFICIENCY * LENT_H200_MATMUL_TFLOPS * 1e12
    )
    versions = {}
    for name in ("torch", "transformers", "peft", "trl", "accelerate", "liger-kernel", "bitsandbytes"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M')}, {gpu_name}, bf16 matmul {measured:.3g} TFLOP/s measured now; model "
        f"{model_dir.name} ({parameters / 1e9:.3f} B parameters, random init, embeddings tied); batch {batch_size} "
        f"chats of up to {seq_len} tokens, {steps} steps per row "
        f"({WARMUP_STEPS if steps > WARMUP_STEPS + 1 else 0} left out of the rates); "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    print(header, flush=True)
    print(
        f"{len(rows)} rows; their training FLOPs at {BUDGET_EFFICIENCY:.0%} of {LENT_H200_MATMUL_TFLOPS:.0f} "
        f"TFLOP/s take {estimate:.0f} s on an H200 (plus each row's start: imports, loading, compiling)",
        flush=True,
    )
    for note in notes:
        print(note, flush=True)

    results, log = [], []
    with tempfile.TemporaryDirectory() as home:
        data_dir = Path(home) / "data"
        from benchmarks.train_runners import build_data

        # One batch more than the run (and Tuneforge's minimum of 10 examples): no row reaches an
        # epoch's end, where Tuneforge would checkpoint.
        build_data(data_dir, seq_len, max(10, (steps + 1) * batch_size), batch_size, model=str(model_dir))
        env = {
            **os.environ,
            "TUNEFORGE_HOME": home,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTORCH_CUDA_ALLOC_CONF": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True"),
        }
        for label, method, settings in rows:
            row = {"label": label, "method": method, "settings": settings}
            left = deadline - (time.perf_counter() - started)
            timeout = min(args.row_timeout or (900 if args.smoke else 240), left)
            if timeout < 30:
                row.update(status="skipped", reason=f"the run's deadline ({deadline} s) was reached")
                results.append(row)
                continue
            child = {**settings, "model": str(model_dir), "method": "lora" if method == "qlora" else method}
            child.update(prompt_loss_weight=1.0, **({"lora_dropout": 0.0} if method != "full" else {}))
            command = [
                sys.executable,
                *("-m", "benchmarks.gpu", "--steps", str(steps), "--batch-size", str(batch_size)),
                *("--seq-len", str(seq_len), "--one", json.dumps(child), "--data-dir", str(data_dir)),
            ]
            row_started = time.perf_counter()
            try:
                done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
                code, stdout, stderr = done.returncode, done.stdout, done.stderr
            except subprocess.TimeoutExpired as error:
                code, stdout = "timeout", ""
                stderr = error.stderr.decode() if isinstance(error.stderr, bytes) else (error.stderr or "")
            row["wall_s"] = round(time.perf_counter() - row_started, 1)
            log += [f"===== {label} ({method}): exit {code}, {row['wall_s']} s", *stderr.splitlines()[-60:]]
            last = (stderr.strip().splitlines() or ["?"])[-1][:300]
            if code == 0:
                raw = json.loads(stdout.strip().splitlines()[-1])
                flops = (6 if method == "full" else 4) * parameters
                row.update(status="ok", raw=raw, summary=summarise(raw, flops, ceilings))
            elif last.startswith("skipped: "):
                row.update(status="skipped", reason=last.removeprefix("skipped: "))
            else:
                row.update(status="failed", reason=f"exit {code} after {row['wall_s']} s: {last}")
            results.append(row)
            text = write_out(out, header, notes, results, ceilings, log)
            print(table(results, ceilings)[-1], f"({row['wall_s']} s)", flush=True)
    text = write_out(out, header, notes, results, ceilings, log)
    print(f"\n{text}\n\nwhole run {time.perf_counter() - started:.0f} s; written to {out}/gpu.md, gpu.json, gpu.log")


if __name__ == "__main__":
    main()
