"""Where a Tuneforge training step spends its time: torch.profiler's top operators by self CPU time.

Run: `python -m benchmarks.profile_train_step [--method lora] [--precision bf16] [--steps 2] [--set flag=value ...]`

Builds the model and one batch of `--batch-size` synthetic chats of ~`--seq-len` tokens (the data
of `benchmarks/train.py`) exactly as `train_sft` does, runs one warm-up step, then profiles
`--steps` steps (forward, backward, clipping, AdamW) and prints the operators' table.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument(
        "--set", nargs="*", default=[], help="TrainConfig fields, e.g. lora_dropout=0 prompt_loss_weight=0"
    )
    args = parser.parse_args()

    from benchmarks.train_runners import MODEL, build_data, tokenized
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.models.catalog import load_tokenizer
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.loop import build_optimizer
    from tuneforge.train.sft import build_model, train_step

    overrides = {key: _value(value) for key, value in (item.split("=", 1) for item in args.set)}
    with tempfile.TemporaryDirectory() as directory:
        train, _ = build_data(Path(directory), args.seq_len, args.batch_size, 8)
        config = TrainConfig(
            model=MODEL,
            data=train,
            method=args.method,
            precision=args.precision,
            batch_size=args.batch_size,
            max_seq_length=args.seq_len,
            **{"prompt_loss_weight": 1.0, **overrides},
        ).resolve(args.batch_size, 8192)
        examples = tokenized(train, config.prompt_loss_weight, args.seq_len)
    pad_id = ChatTokenizer(load_tokenizer(MODEL)).pad_id
    model = build_model(config)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, 1e-5, 0.0)  # the recipe's (fused AdamW)

    def step():
        train_step(model, examples, config, pad_id)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    started = time.perf_counter()
    step()
    print(f"warm-up step: {time.perf_counter() - started:.1f} s")
    tokens = sum(len(e.input_ids) for e in examples)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - started) / args.steps
    print(
        f"{args.method} {args.precision} {overrides}: {seconds:.2f} s/step, {tokens / seconds:.0f} tok/s (under the "
        f"profiler)"
    )
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


if __name__ == "__main__":
    main()
