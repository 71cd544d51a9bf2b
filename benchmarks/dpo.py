"""DPO on the bundled model: Tuneforge against TRL's DPOTrainer (speed), and what DPO changes (shift).

Run: `python -m benchmarks.dpo [--steps 12] [--batch-size 8]` (speed), `python -m benchmarks.dpo --shift`.

Speed, the same rules as benchmarks/train.py: every row trains SmolLM2-135M-Instruct in its own
process on the same data (examples/support_preferences.jsonl: 150 pairs, a house-style reply
preferred over a terse one), LoRA r=16 alpha=32 on all linear layers, beta 0.1, sigmoid loss,
constant learning rate 5e-6, AdamW fused, clipping at 1.0, `--batch-size` pairs a step. tok/s
counts every real token of both replies' sequences (prompt included) over the steady state (the
first two steps left out); one-off s is what a row spends before its steps besides loading the
model: the reference log-probabilities where they are computed once (Tuneforge always; TRL with
`precompute_ref_log_probs`), TRL's dataset preparation. TRL's rows compute the reference per step with
the adapter disabled (its default) or once beforehand (`precompute_ref_log_probs=True`).

Shift: Tuneforge's DPO with its defaults (objective dpo, nothing else set) on 130 of the pairs; on the
20 held out, the base's and the tuned model's greedy answers (at most 160 new tokens) and their
house style (a reply that opens "Hi there" and signs "- Pip, Lumen Ledger Support", as every
preferred reply does and no rejected one), and `tuneforge eval`'s preference accuracy (the preferred
reply's log-probability above the other's) with its paired-bootstrap interval against the base.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "support_preferences.jsonl"
MODEL = "smollm2-135m-instruct"
WARMUP_STEPS, SEED, LEARNING_RATE, BETA = 2, 1234, 5e-6, 0.1
ROWS = [
    ("TRL DPOTrainer + PEFT, reference per step, fp32", {"trainer": "trl", "precision": "fp32"}),
    ("TRL DPOTrainer + PEFT, reference per step, bf16", {"trainer": "trl", "precision": "bf16"}),
    (
        "TRL DPOTrainer + PEFT, reference precomputed, bf16",
        {"trainer": "trl", "precision": "bf16", "precompute": True},
    ),
    ("Tuneforge DPO, fp32", {"trainer": "tuneforge", "precision": "fp32"}),
    ("Tuneforge DPO, bf16", {"trainer": "tuneforge", "precision": "bf16"}),
]
SIGNATURE, OPENING = "Pip, Lumen Ledger Support", "Hi there"


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trl(settings: dict, data: Path, steps: int, batch_size: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tuneforge.models.catalog import load_model, load_tokenizer

    rows = [
        {"prompt": p["input"]["messages"], "chosen": p["preferred_output"], "rejected": p["non_preferred_output"]}
        for p in read_pairs(data)
    ]
    timings: dict = {"begin": [], "end": [], "tokens": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timings["begin"].append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            timings["end"].append(time.perf_counter())

    class Counting(DPOTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            timings["tokens"].append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    config = DPOConfig(
        output_dir=str(data.parent / "trl-output"),
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=SEED,
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        bf16=settings["precision"] == "bf16",
        fp16=False,
        gradient_checkpointing=False,  # DPOConfig's default is on; Tuneforge's rows run without it too
        beta=BETA,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=settings.get("precompute", False),
        max_length=1024,
        dataloader_num_workers=0,
    )
    began = time.perf_counter()
    model = load_model(MODEL)
    loaded = time.perf_counter()
    trainer = Counting(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=load_tokenizer(MODEL),
        callbacks=[Timer()],
        peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"),
    )
    trainer.train()
    ended = time.perf_counter()
    step_seconds = [e - b for b, e in zip(timings["begin"], timings["end"])]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    accuracies = [e["rewards/accuracies"] for e in trainer.state.log_history if "rewards/accuracies" in e]
    return {
        "step_seconds": step_seconds,
        "step_tokens": timings["tokens"],
        "one_off_seconds": ended - loaded - sum(step_seconds),
        "load_seconds": loaded - began,
        "losses": losses,
        "reward_accuracies": accuracies,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_tuneforge(settings: dict, data: Path, steps: int, batch_size: int) -> dict:
    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.reporter import Reporter

    rows = []

    class Collect(Reporter):
        def step(self, row):
            rows.append(row)

    config = TrainConfig(
        model=MODEL,
        data=data,
        objective="dpo",
        n_epochs=1,
        max_steps=steps,
        batch_size=batch_size,
        learning_rate_multiplier=LEARNING_RATE / 2e-3,  # LoRA's base rate is 2e-3
        lr_scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=SEED,
        dpo_beta=BETA,
        precision=settings["precision"],
        validation_split=0.0,
        forgetting_guard=False,
    )
    began = time.perf_counter()
    result = train_run(config, Collect())
    ended = time.perf_counter()
    step_seconds = [row["tokens"] / row["tokens_per_second"] for row in rows]
    return {
        "step_seconds": step_seconds,
        "step_tokens": [row["tokens"] for row in rows],
        # model load, tokenising and the reference pass, and saving the run: all outside the steps
        "one_off_seconds": (ended - began) - result.metrics["wall_seconds"],
        "losses": [row["train_loss"] for row in rows],
        "reward_accuracies": [row["train_accuracy"] for row in rows],
        "peak_rss_mb": peak_rss_mb(),
    }


def worker(row: int, out: Path, steps: int, batch_size: int) -> None:
    label, settings = ROWS[row]
    runner = run_trl if settings["trainer"] == "trl" else run_tuneforge
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "pairs.jsonl"
        data.write_text(DATA.read_text())
        out.write_text(json.dumps(runner(settings, data, steps, batch_size)))


def speed(steps: int, batch_size: int, only: str | None) -> None:
    from tuneforge.settings import model_cache_dir

    print(f"DPO speed: {MODEL}, {DATA.name}, {batch_size} pairs a step, {steps} steps, {os.cpu_count()} cores")
    print("| row | tok/s | one-off s | peak RSS GB | train loss (last 4) | reward accuracy (last step) |")
    print("|---|---|---|---|---|---|")
    table = []
    for index, (label, settings) in enumerate(ROWS):
        if only and only not in label:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "row.json"
            env = {  # runs and the registry go to a throw-away home; the converted model stays where it is
                **os.environ,
                "TUNEFORGE_MODEL_CACHE": str(model_cache_dir()),
                "TUNEFORGE_HOME": str(Path(scratch) / "home"),
                "HF_HUB_OFFLINE": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            }
            args = [sys.executable, "-m", "benchmarks.dpo", "--row", str(index), "--out", str(out)]
            args += ["--steps", str(steps), "--batch-size", str(batch_size)]
            done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{label}: failed\n{done.stderr[-2000:]}")
                continue
            result = json.loads(out.read_text())
        seconds = result["step_seconds"][WARMUP_STEPS:]
        tokens = result["step_tokens"][WARMUP_STEPS:]
        rate = sum(tokens) / sum(seconds)
        table.append((label, rate, result))
        print(
            f"| {label} | {rate:,.0f} | {result['one_off_seconds']:.1f} | {result['peak_rss_mb'] / 1024:.2f} | "
            f"{sum(result['losses'][-4:]) / 4:.4f} | {result['reward_accuracies'][-1]:.2f} |",
            flush=True,
        )
    best = {
        kind: max((r for r in table if kind in r[0]), key=lambda r: r[1], default=None) for kind in ("TRL", "Tune")
    }
    if best["TRL"] and best["Tune"]:
        print(f"Tuneforge's best / TRL's best: {best['Tune'][1] / best['TRL'][1]:.2f}x tokens/s")


def house_style(text: str) -> bool:
    return text.strip().startswith(OPENING) and SIGNATURE in text


def shift(held_out: int, flow: str) -> None:
    """`flow` dpo: DPO from the base; sft-dpo: SFT on the preferred replies of the same training pairs
    first, then DPO on top of that model (the issue's recommended flow); mixed-sft-dpo: SFT on both
    replies of each pair first, then DPO. Each stage with its defaults."""
    from tuneforge.runs.evaluation import run_eval
    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig

    pairs = read_pairs(DATA)
    random.Random(SEED).shuffle(pairs)
    scratch = Path(tempfile.mkdtemp(prefix="tuneforge-dpo-"))
    train, test = scratch / "train.jsonl", scratch / "test.jsonl"
    train.write_text("".join(json.dumps(p) + "\n" for p in pairs[held_out:]))
    test.write_text("".join(json.dumps(p) + "\n" for p in pairs[:held_out]))
    models = [("base", MODEL)]
    start = MODEL
    if flow != "dpo":
        # sft-dpo: the preferred replies alone; mixed-sft-dpo: both replies of each pair, as a
        # support log of mixed quality would hold them (DPO then has to pick the house style).
        sides = ("preferred_output",) if flow == "sft-dpo" else ("preferred_output", "non_preferred_output")
        chats = scratch / "sft.jsonl"
        chats.write_text(
            "".join(
                json.dumps({"messages": p["input"]["messages"] + p[side]}) + "\n"
                for p in pairs[held_out:]
                for side in sides
            )
        )
        began = time.perf_counter()
        sft = train_run(TrainConfig(model=MODEL, data=chats))
        print(
            f"SFT on {len(pairs) - held_out} pairs' {' and '.join(sides)} in {time.perf_counter() - began:.0f} s: "
            f"{sft.metrics['step']} steps, batch {sft.config.batch_size}, lr {sft.config.learning_rate:.2e}"
        )
        models.append(("SFT", sft.run_id))
        start = sft.model_name
    began = time.perf_counter()
    result = train_run(TrainConfig(model=start, data=train, objective="dpo"))
    trained_seconds = time.perf_counter() - began
    m = result.metrics
    print(
        f"DPO on {len(pairs) - held_out} pairs in {trained_seconds:.0f} s: {m['step']} steps, batch "
        f"{result.config.batch_size}, lr {result.config.learning_rate:.2e}, beta {result.config.dpo_beta}; "
        f"validation reward accuracy {m.get('valid_reward_accuracy')}, margin {m.get('valid_rewards_margin')}"
    )
    models.append(("SFT -> DPO" if flow != "dpo" else "DPO", result.run_id))
    against = models[-2][1]  # what DPO started from
    results = run_eval(result.run_id, test, against, None, scratch / "eval", max_new_tokens=160, probes=False)
    accuracy = results["comparison"]["preference_accuracy"]
    print(
        f"held-out preference accuracy: {models[-2][0]} {accuracy['mean_a']:.2f}, after DPO {accuracy['mean_b']:.2f} "
        f"(delta {accuracy['delta']:+.2f}, 95 % [{accuracy['ci_low']:+.2f}, {accuracy['ci_high']:+.2f}])"
    )
    prompts = [p["input"]["messages"] for p in pairs[:held_out]]
    for label, name in models:
        show_answers(label, name, prompts)


def show_answers(label: str, name: str, prompts: list) -> None:
    """How many of the model's greedy answers to `prompts` open, sign off, and do both as the house does."""
    from tuneforge.data.examples import Message
    from tuneforge.runs.models import engine as engine_for

    answers = engine_for(name).generate(
        [[Message(m["role"], m["content"]) for m in prompt] for prompt in prompts], max_new_tokens=160
    )
    texts = [a.text for a in answers]
    opened = sum(t.strip().startswith(OPENING) for t in texts)
    signed = sum(SIGNATURE in t for t in texts)
    styled = sum(house_style(t) for t in texts)
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(
        f"{label}: {styled}/{len(texts)} in the house style ({opened} open with '{OPENING}', {signed} signed), "
        f"{words:.0f} words on average; first:"
    )
    print("   ", texts[0].replace("\n", " / ")[:240])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--only", help="run the rows whose label contains this")
    parser.add_argument("--shift", action="store_true", help="train with the defaults and measure the answers")
    parser.add_argument("--held-out", type=int, default=20)
    parser.add_argument(
        "--flow",
        choices=["dpo", "sft-dpo", "mixed-sft-dpo"],
        default="dpo",
        help="with --shift: DPO from the base, or SFT first",
    )
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row is not None:
        worker(args.row, args.out, args.steps, args.batch_size)
    elif args.shift:
        shift(args.held_out, args.flow)
    else:
        speed(args.steps, args.batch_size, args.only)


if __name__ == "__main__":
    main()
