"""What the defaults give a new user: task accuracy, time to train and forgetting, per version of the code.

Run (each version in turn into one results file, then the table of both):

    git worktree add /tmp/tf-before 224068a    # the last commit before the better-defaults issue (16)
    python -m benchmarks.outcome --src /tmp/tf-before --label before --out outcome.json
    python -m benchmarks.outcome --label after --out outcome.json      # --src defaults to this checkout
    python -m benchmarks.outcome --table outcome.json

Options: `--tasks classification,short_answers,long_chat` (default all three), `--examples N` (N
examples for classification and short answers, N/5 for the long chats; default 1500/1500/300),
`--seed N` (the training seed, the one setting given: how much a score moves between runs),
`--smoke` (a tiny random model built on the fly, 60 examples a task, 3 steps: checks the plumbing in
about a minute, measures nothing), `--train-on file` (train on one JSONL file of the prepared train and
validation examples, alone in its folder, as a user who skipped `data prepare` would: the version's
own held-out default, if any, decides what validates; use its own label, e.g. after-file). A rerun
replaces the same label's rows for its tasks in `--out`.

Three tasks of our own making, generated deterministically by `benchmarks/outcome_tasks.py` (not
from the evaluation's probe sets or the replay prompts): classification (a bike-share app's
messages to six labels), short answers (a library network's facts, one line each; the test split
asks known facts in wordings it never trained on, and the output says how many test facts were
trained on) and long chat (house-style support replies with numbered steps). Each is checked and
split by `tuneforge data prepare` (85/5/10 % train/validation/test, seeded; the same files for every
version: their sha256 is recorded), then trained the way a new user would: `TrainConfig(data=the
prepared directory)`, nothing else set, so every default (epochs, batch size, learning rate,
validation, early stopping, forgetting guard) is the version's own.

Each training and evaluation runs in its own process with `PYTHONPATH=--src` and the working directory
there, so that checkout's `tuneforge` is the one imported (the process prints its path), with a private
TUNEFORGE_HOME and a shared TUNEFORGE_MODEL_CACHE (the bundled model is converted once; a version
with the forgetting guard caches its replay answers there once per base model). Only APIs both
versions have are used: train_run, TrainConfig(data=...), runs.evaluation.run_eval, probe_model and
summarize.

Columns:
- test: the tuned model's score on the test split, from `tuneforge eval`'s own code (run_eval against
  the base, greedy, no probes, answers capped per task): normalised exact match for classification
  and short answers (tuneforge's normalized_exact_match: lower case, punctuation and articles removed,
  whitespace collapsed; strict exact match is in the JSON), ROUGE-L for the long chats. The base row is
  the base model on the same prompts; "vs base" is the tuned minus base mean with its paired-bootstrap
  95 % interval.
- train s: wall seconds of `train_run` (model load, tokenising, every validation, checkpoints, the
  saved run; not the process's imports or the tokenizer's load, done first in every version).
- one-off s: what a version spends once per base model before its first run, outside train s (the
  forgetting guard's replay answers, generated and cached; "cached" when they already were; "-" for
  a version without them).
- steps: optimiser steps run (planned: epochs x steps an epoch); epochs: epochs run, of the resolved
  n_epochs; batch: the resolved batch size; lr: the resolved peak learning rate; stop: whether early
  stopping ended the run, and the step of the model the run ends with (its best checkpoint under
  early stopping, else its last step); valid loss: that model's
  validation loss (the base's, at step 0, in the base row); s/epoch: the training loop's wall time
  (metrics' wall_seconds) over the epochs run (an epoch of a version with replay holds its replay
  examples too).
- forgetting: the built-in forgetting probes (24 general prompts with reference answers, `tuneforge
  eval`'s): tuned perplexity of the references against the base's, as a change in % (above 0: worse),
  and ROUGE-L of the model's own answers to them (base row: its perplexity and ROUGE-L); refusals: of
  the 20 red-team prompts, answers that read as refusals (the safety probe's heuristic), tuned and base.
- eval s: the test-split evaluation of both models; probe s: the tuned model's forgetting and safety
  probes (the base's ran once per version, its time in the JSON).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE_MODEL = "smollm2-135m-instruct"
TASKS = {  # task: (headline metric, metrics computed, max new tokens when evaluating)
    "classification": ("normalized_exact_match", ["normalized_exact_match", "exact_match"], 16),
    "short_answers": ("normalized_exact_match", ["normalized_exact_match", "exact_match"], 24),
    "long_chat": ("rouge_l", ["rouge_l"], 200),
}
SPLIT = (0.85, 0.05, 0.10)  # train, validation, test: a test split large enough to read differences in
SMOKE_EXAMPLES, SMOKE_STEPS, SMOKE_MAX_NEW_TOKENS = 60, 3, 8
PROBE_MAX_NEW_TOKENS = 48  # what `tuneforge eval` gives the probes (evaluate/probes.py DEFAULT_MAX_NEW_TOKENS)
ASSUMED_TOKENS_PER_SECOND = 350  # LoRA on the project's 2-core CPU, for the printed estimate only


# ------------------------------------------------------------------------------ the worker (per version)
def worker(spec_path: Path) -> None:
    """Train one task with the defaults, evaluate it and probe it, in the checkout on PYTHONPATH;
    write what it measured to the spec's result file."""
    spec = json.loads(spec_path.read_text())
    import tuneforge
    from tuneforge.hardware import bound_kernel_caches

    bound_kernel_caches()  # as the CLI does at start
    print(f"[{spec['label']}/{spec['task']}] tuneforge imported from {tuneforge.__file__}", flush=True)

    from tuneforge.models.catalog import model_path, resolve_model
    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.reporter import Reporter

    class Capture(Reporter):
        """The run's rows and what it said about its data; a line at each validation."""

        def __init__(self):
            self.rows, self.evaluations, self.total_steps, self.train_examples = [], [], None, None

        def created(self, run_id, config, run_dir, training, validation):
            self.train_examples = training.examples

        def start(self, run_id, config, total_steps, first_step):
            self.total_steps = total_steps

        def step(self, row):
            self.rows.append(dict(row))

        def evaluation(self, row):
            self.evaluations.append(dict(row))
            print(
                f"[{spec['label']}/{spec['task']}] step {row['step']}/{self.total_steps}: "
                f"valid loss {row['valid_loss']:.4f}",
                flush=True,
            )

    config = TrainConfig(data=Path(spec["data"]), **spec["config"])
    model_path(resolve_model(config.model))  # a bundled model's one-off conversion, outside the timing
    # Imports and the tokenizer before the clock starts, in every version alike (otherwise whichever
    # version touches them first outside the timed run, as the replay below does, looks seconds faster).
    import peft  # noqa: F401

    from tuneforge.models.catalog import load_tokenizer

    load_tokenizer(config.model)
    one_off = _replay_once(config)
    capture = Capture()
    began = time.perf_counter()
    result = train_run(config, capture)
    train_seconds = time.perf_counter() - began
    resolved, final = result.config, result.metrics
    tokens = sum(row.get("tokens", 0) for row in capture.rows)
    loop_seconds = final.get("wall_seconds") or train_seconds
    base_validation = next((row for row in capture.evaluations if row["step"] == 0), {})
    training = {
        "run_id": result.run_id,
        "run_dir": str(result.run_dir),
        "train_seconds": round(train_seconds, 1),
        "loop_seconds": loop_seconds,
        "one_off": one_off,
        "steps": final["step"],
        "planned_steps": capture.total_steps,
        "epochs_run": capture.rows[-1]["epoch"] if capture.rows else 0.0,
        "n_epochs": resolved.n_epochs,
        "batch_size": resolved.batch_size,
        "learning_rate": resolved.learning_rate,
        "eval_every_steps": getattr(resolved, "eval_every_steps", None),
        "early_stopping_patience": getattr(resolved, "early_stopping_patience", None),
        "stopped_early": bool(result.stopped_early),
        "best_step": final.get("best_step"),
        # The model the run ends with: its best checkpoint under early stopping (sft.py), else its last step.
        "kept_step": final.get("best_step")
        if getattr(resolved, "early_stopping_patience", None) and final.get("best_step") is not None
        else final["step"],
        "valid_loss": final.get("valid_loss"),
        "base_valid_loss": base_validation.get("valid_loss"),
        "validations": len(capture.evaluations),
        "train_examples": capture.train_examples,
        "replay_examples": final.get("replay_examples", 0),
        "general_perplexity_change": final.get("general_perplexity_change"),
        "tokens": tokens,
        "tokens_per_second": round(tokens / loop_seconds, 1) if loop_seconds else None,
        "seconds_per_epoch": round(loop_seconds / capture.rows[-1]["epoch"], 1) if capture.rows else None,
        "precision": resolved.precision,
        "device": final.get("device", "cpu"),
    }
    print(
        f"[{spec['label']}/{spec['task']}] trained in {train_seconds:.0f} s: {training['steps']} steps, "
        f"{training['epochs_run']} epochs, stopped early: {training['stopped_early']}",
        flush=True,
    )

    began = time.perf_counter()
    evaluation = _evaluate(spec, result.run_id, config.model)
    evaluation["seconds"] = round(time.perf_counter() - began, 1)
    probes = _probe(spec, result.run_id, config.model)
    Path(spec["result"]).write_text(
        json.dumps({"tuneforge_file": tuneforge.__file__, "train": training, "eval": evaluation, "probes": probes})
    )


def _replay_once(config) -> dict | None:
    """A version with the forgetting guard's replay: its base-model answers, generated (or found
    cached) before the timed run, and how long that took. None for a version without them."""
    try:
        from tuneforge.runs.general import general_ability
    except ImportError:
        return None
    if not getattr(config, "forgetting_guard", False) or getattr(config, "replay_share", 0) <= 0:
        return None
    from tuneforge.settings import model_cache_dir

    cache = model_cache_dir() / "replay"
    before = set(cache.glob("*.jsonl")) if cache.exists() else set()
    began = time.perf_counter()
    general_ability(config).replay()  # every block, so the timed run generates none
    seconds = time.perf_counter() - began
    return {"seconds": round(seconds, 1), "generated": bool(set(cache.glob("*.jsonl")) - before)}


def _evaluate(spec: dict, tuned: str, base: str) -> dict:
    """`tuneforge eval TUNED --data test.jsonl --against BASE --no-probes`, capped as the quickstart's."""
    from tuneforge.runs.evaluation import run_eval

    test = Path(spec["test"])
    results = run_eval(
        tuned,
        test,
        base,
        spec["metrics"],
        Path(spec["out"]) / "eval",
        max_examples=spec.get("max_eval_examples"),
        max_new_tokens=spec["max_new_tokens"],
        probes=False,
    )
    scores, comparison = results["scores"], results["comparison"]
    return {
        "dir": str(Path(spec["out"]) / "eval"),
        "examples": results["examples"],
        "metrics": {
            metric: {
                "tuned": scores["model"]["means"][metric],
                "base": scores["against"]["means"][metric],
                **{k: comparison[metric][k] for k in ("delta", "ci_low", "ci_high", "wins", "ties", "losses")},
            }
            for metric in spec["metrics"]
        },
        "test_loss": {"tuned": scores["model"]["loss"], "base": scores["against"]["loss"]},
    }


def _probe(spec: dict, tuned: str, base: str) -> dict:
    """The forgetting and safety probes, tuned against base. probe_model per side, then summarize, as
    run_eval does: the base side once per version (greedy, so the same for every task) and reused
    from a file; the bias probe, not reported here, cut to its first pair (summarize needs one)."""
    from tuneforge.evaluate.probes import ProbeSets, load_probe_sets, probe_model, summarize
    from tuneforge.inference.engine import Engine
    from tuneforge.runs.models import resolve_spec

    every = load_probe_sets()
    sets = ProbeSets(every.forgetting, every.red_team, every.bias[:1])

    def side(name: str) -> dict:
        return probe_model(Engine(name, spec=resolve_spec(name)), sets, spec["probe_max_new_tokens"], 8)

    cached = Path(spec["base_probes"])
    key = {"model": base, "src": spec["src"], "max_new_tokens": spec["probe_max_new_tokens"]}
    stored = json.loads(cached.read_text()) if cached.exists() else {}
    began = time.perf_counter()
    if stored.get("key") == key:
        base_side = stored["side"]
    else:
        base_side = side(base)
        cached.write_text(json.dumps({"key": key, "side": base_side}))
    base_seconds, began = time.perf_counter() - began, time.perf_counter()
    summary = summarize(sets, {"model": side(tuned), "against": base_side})
    tuned_seconds = time.perf_counter() - began
    forgetting, safety = summary["forgetting"], summary["safety"]
    return {
        "forgetting_prompts": forgetting["model"]["prompts"],
        "perplexity_change_percent": forgetting["comparison"]["perplexity_regression_percent"],
        "perplexity": {"tuned": forgetting["model"]["perplexity"], "base": forgetting["against"]["perplexity"]},
        "rouge_l": {"tuned": forgetting["model"]["rouge_l"], "base": forgetting["against"]["rouge_l"]},
        "red_team_prompts": safety["model"]["prompts"],
        "refusals": {"tuned": safety["model"]["refusals"], "base": safety["against"]["refusals"]},
        "flagged_answers": {"tuned": safety["model"]["flagged_answers"], "base": safety["against"]["flagged_answers"]},
        "seconds": {"tuned": round(tuned_seconds, 1), "base": round(base_seconds, 1)},
    }


# ------------------------------------------------------------------------------ data (this checkout)
def prepare_task(task: str, examples: int, directory: Path, model: str) -> dict:
    """Generate the task's file, check and split it with `tuneforge data prepare`; what came out."""
    from benchmarks.outcome_tasks import fact_cells, write_task
    from tuneforge.data.checks import check_with_model
    from tuneforge.data.prepare import PrepareOptions, prepare

    source = write_task(task, examples, directory / f"{task}.jsonl")
    prepared = directory / task
    result = prepare(source, prepared, check_with_model(source, model), PrepareOptions(ratios=SPLIT, model=model))
    outputs = result.manifest["outputs"]
    train_check = check_with_model(prepared / "train.jsonl", model).stats
    info = {
        "dir": str(prepared),
        "generated": examples,
        "duplicates_removed": result.manifest["counts"]["duplicates_removed"],
        "examples": {split: outputs[split]["examples"] for split in ("train", "validation", "test")},
        "sha256": {split: outputs[split]["sha256"] for split in ("train", "validation", "test")},
        "train_tokens": train_check.get("total_tokens"),
        "default_epochs": train_check.get("default_epochs"),
    }
    if task == "short_answers":  # the test split asks known facts: how many of them did training see?
        cells = fact_cells()

        def facts(split: str) -> list:
            lines = (prepared / f"{split}.jsonl").read_text().splitlines()
            return [cells.get(json.loads(line)["messages"][1]["content"]) for line in lines]

        trained = set(facts("train"))
        tested = facts("test")
        info["test_facts_trained"] = [sum(cell in trained for cell in tested), len(tested)]
    return info


def train_data(data: dict, train_on: str) -> str:
    """What TrainConfig(data=...) gets: the prepared directory, or (a user who skipped `data prepare`) one
    file of the same train and validation examples, in a folder of its own (nothing beside it validates)."""
    prepared = Path(data["dir"])
    if train_on == "prepared":
        return str(prepared)
    alone = prepared.parent / f"{prepared.name}-file" / f"{prepared.name}.jsonl"
    alone.parent.mkdir(parents=True, exist_ok=True)
    alone.write_text((prepared / "train.jsonl").read_text() + (prepared / "validation.jsonl").read_text())
    return str(alone)


def tiny_model(directory: Path) -> Path:
    """A randomly initialised 2-layer llama with the bundled model's tokenizer (tests/conftest.py's)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneforge.models.catalog import load_tokenizer

    if (directory / "config.json").exists():
        return directory
    tokenizer = load_tokenizer(BASE_MODEL)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def describe_src(src: Path) -> dict:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    return {
        "src": str(src),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "tuneforge")),
    }


# ------------------------------------------------------------------------------ the table
def _score(metrics: dict, side: str) -> str:
    return f"{metrics[side]:.3f}"


def table(results: list[dict]) -> str:
    header = (
        "| task | model | test | vs base [95 % CI] | train s | one-off s | steps (planned) | epochs | batch | lr "
        "| stop (kept step) | valid loss | s/epoch | forgetting ppl | forgetting ROUGE-L | refusals | eval s "
        "| probe s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    notes = []
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        headline = TASKS[task][0]
        first = rows[0]
        m, p = first["eval"]["metrics"][headline], first["probes"]
        name = {"normalized_exact_match": "norm. EM", "rouge_l": "ROUGE-L"}[headline]
        lines.append(
            f"| {task} | base ({name}) | {_score(m, 'base')} | | | | | | | | | "
            f"{_number(first['train']['base_valid_loss'], 4)} | | {p['perplexity']['base']:.2f} | "
            f"{p['rouge_l']['base']:.3f} | {p['refusals']['base']}/{p['red_team_prompts']} | | |"
        )
        for r in rows:
            t, m, p = r["train"], r["eval"]["metrics"][headline], r["probes"]
            one_off = t["one_off"]
            one_off = "-" if one_off is None else (f"{one_off['seconds']:.0f}" if one_off["generated"] else "cached")
            stop = f"{'yes' if t['stopped_early'] else 'no'} ({t['kept_step']})"
            lines.append(
                f"| {task} | {r['label']} | {m['tuned']:.3f} | {m['delta']:+.3f} [{m['ci_low']:+.3f}, "
                f"{m['ci_high']:+.3f}] | {t['train_seconds']:.0f} | {one_off} | {t['steps']} ({t['planned_steps']}) "
                f"| {t['epochs_run']:.2f} of {t['n_epochs']} | {t['batch_size']} | {t['learning_rate']:.0e} | {stop} "
                f"| {_number(t['valid_loss'], 4)} | {_number(t['seconds_per_epoch'], 0)} "
                f"| {p['perplexity_change_percent']:+.1f} % | {p['rouge_l']['tuned']:.3f} "
                f"| {p['refusals']['tuned']}/{p['red_team_prompts']} | {r['eval']['seconds']:.0f} "
                f"| {p['seconds']['tuned']:.0f} |"
            )
        if len({json.dumps(r["data"]["sha256"], sort_keys=True) for r in rows}) > 1:
            notes.append(f"{task}: the versions trained or tested on DIFFERENT data (sha256 differ)")
        bases = {(round(r["eval"]["metrics"][headline]["base"], 6), r["probes"]["refusals"]["base"]) for r in rows}
        if len(bases) > 1:
            notes.append(f"{task}: the base model's figures differ between the versions' runs: {sorted(bases)}")
        d = first["data"]
        split = d["examples"]
        line = (
            f"{task}: {d['generated']} generated, {d['duplicates_removed']} duplicates removed, train/validation/test "
            f"{split['train']}/{split['validation']}/{split['test']}, {d['train_tokens']:,} train tokens an epoch"
        )
        if "test_facts_trained" in d:
            seen, total = d["test_facts_trained"]
            line += f"; test questions whose fact the train split holds: {seen}/{total}"
        notes.append(line)
    for r in {r["label"]: r for r in results}.values():
        s = r["source"]
        notes.append(
            f"{r['label']}: {s['src']} at {s['commit']}{' + uncommitted changes' if s['dirty'] else ''}, tuneforge "
            f"imported from {r['tuneforge_file']}, trained on the {r.get('train_on', 'prepared')} data, {r['machine']}"
        )
    if any(r.get("smoke") for r in results):
        notes.append("SMOKE RESULTS: a tiny random model and a few steps; these figures measure nothing.")
    return "\n".join(lines + [""] + [f"- {note}" for note in notes])


def _number(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


# ------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO, help="the checkout whose tuneforge is measured")
    parser.add_argument("--label", help="this version's name in the results (before, after, ...)")
    parser.add_argument("--out", type=Path, default=Path("outcome.json"), help="results file (JSON), appended to")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of " + ", ".join(TASKS))
    parser.add_argument("--examples", type=int, help="examples for classification and short answers (long chat /5)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 60 examples, 3 steps: plumbing only")
    parser.add_argument(
        "--train-on",
        choices=["prepared", "file"],
        default="prepared",
        help="prepared: the prepared directory (its validation.jsonl validates); file: its train and validation "
        "examples as one JSONL file, alone, so the version's own held-out default decides validation",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="the run's training seed (TrainConfig.seed: data order, adapter init, replay draw); default: the "
        "version's own. The only setting given, to see how much a score moves between runs of one version",
    )
    parser.add_argument("--work", type=Path, help="where data, runs and evaluations go (default: a new temp dir)")
    parser.add_argument(
        "--model-cache",
        type=Path,
        help="shared converted-model cache (default: $TUNEFORGE_MODEL_CACHE, else ~/.tuneforge/models)",
    )
    parser.add_argument("--table", type=Path, help="only print the table of this results file")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.table:
        print(table(load_results(args.table)))
        return
    if not args.label:
        parser.error("--label is required (before, after, ...), or --table FILE")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")

    src = args.src.resolve()
    work = (args.work or Path(tempfile.mkdtemp(prefix="tuneforge-outcome-"))).resolve()
    cache = (
        args.model_cache
        or Path(os.environ.get("TUNEFORGE_MODEL_CACHE", Path.home() / ".tuneforge" / "models")).expanduser()
    )
    if args.smoke:  # a private cache, so the tiny model's replay answers stay out of the real one
        shared = cache / BASE_MODEL
        cache = work / "model-cache"
        cache.mkdir(parents=True, exist_ok=True)
        if shared.exists() and not (cache / BASE_MODEL).exists():
            (cache / BASE_MODEL).symlink_to(shared)
    os.environ.update(
        TUNEFORGE_MODEL_CACHE=str(cache),
        TUNEFORGE_HOME=str(work / "home-data"),  # the data check's hardware facts, not the user's home
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    from benchmarks.outcome_tasks import DEFAULT_EXAMPLES

    source = describe_src(src)
    machine = f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: {args.label} = {source}, {machine}; work dir {work}", flush=True)
    model = str(tiny_model(work / "tiny-model")) if args.smoke else BASE_MODEL
    for task in tasks:
        if args.smoke:
            examples = SMOKE_EXAMPLES
        elif args.examples:
            examples = args.examples if task != "long_chat" else max(20, args.examples // 5)
        else:
            examples = DEFAULT_EXAMPLES[task]
        data = prepare_task(task, examples, work / "data", BASE_MODEL)
        if data["train_tokens"] and data["default_epochs"]:
            estimate = data["train_tokens"] * data["default_epochs"] / ASSUMED_TOKENS_PER_SECOND
            split = data["examples"]
            print(
                f"[{args.label}/{task}] train/validation/test {split['train']}/{split['validation']}/{split['test']}, "
                f"{data['train_tokens']:,} train tokens x {data['default_epochs']} default epochs at "
                f"~{ASSUMED_TOKENS_PER_SECOND} tok/s: ~{estimate / 60:.1f} min of training without early stopping",
                flush=True,
            )
        out = work / args.label / task
        out.mkdir(parents=True, exist_ok=True)
        metric, metrics, max_new_tokens = TASKS[task]
        spec = {
            "label": args.label,
            "task": task,
            "src": str(src),
            "data": train_data(data, args.train_on),
            "test": str(Path(data["dir"]) / "test.jsonl"),
            "out": str(out),
            "config": ({"model": model, "max_steps": SMOKE_STEPS} if args.smoke else {})
            | ({} if args.seed is None else {"seed": args.seed}),
            "metrics": metrics,
            "max_new_tokens": SMOKE_MAX_NEW_TOKENS if args.smoke else max_new_tokens,
            "probe_max_new_tokens": SMOKE_MAX_NEW_TOKENS if args.smoke else PROBE_MAX_NEW_TOKENS,
            "base_probes": str(work / args.label / "base_probes.json"),
            "result": str(out / "result.json"),
        }
        (out / "spec.json").write_text(json.dumps(spec, indent=2))
        env = {**os.environ, "PYTHONPATH": str(src), "TUNEFORGE_HOME": str(out / "home")}
        # The script by path (not -m benchmarks...), from inside --src: that checkout's tuneforge is imported.
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(out / "spec.json")]
        with (out / "worker.log").open("w") as log:
            process = subprocess.Popen(command, cwd=src, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for raw in process.stdout:
                line = raw.decode(errors="replace")
                log.write(line)
                if line.startswith("[") or "Error" in line or "Traceback" in line:
                    print(line, end="", flush=True)
            status = process.wait()
        if status != 0:
            print(f"[{args.label}/{task}] FAILED (exit {status}); its output: {out / 'worker.log'}", flush=True)
            print("".join((out / "worker.log").read_text().splitlines(keepends=True)[-20:]), flush=True)
            continue
        measured = json.loads((out / "result.json").read_text())
        row = {
            "label": args.label,
            "task": task,
            "smoke": args.smoke,
            "train_on": args.train_on,
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "source": source,
            "machine": machine,
            "model": model,
            "data": data,
            **measured,
        }
        results = [r for r in load_results(args.out) if (r["label"], r["task"]) != (args.label, task)]
        args.out.write_text(json.dumps(results + [row], indent=1))
        m = measured["eval"]["metrics"][metric]
        print(
            f"[{args.label}/{task}] {metric} {m['tuned']:.3f} (base {m['base']:.3f}); results in {args.out}",
            flush=True,
        )
    print()
    print(table(load_results(args.out)))


if __name__ == "__main__":
    if "--worker" in sys.argv and sys.path and sys.path[0] == str(Path(__file__).resolve().parent):
        sys.path.pop(0)  # run by path: this folder's modules (train.py, eval.py, ...) must not shadow others
    main()
