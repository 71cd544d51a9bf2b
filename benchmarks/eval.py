"""How long `tuneforge eval` takes on a realistic set: 200 support chats of ~100 tokens, generation on.

Run: `python -m benchmarks.eval [--model RUN_OR_NAME] [--examples 200] [--max-tokens 128] [--against none]`

Writes the first `--examples` chats of examples/support_chat.jsonl (system + question + a ~70-token
answer, ~110 tokens each) to a temporary file and runs the real command, `tuneforge eval MODEL
--data FILE --no-probes --max-tokens N`, in a subprocess over your Tuneforge home (default model:
the newest finished run on support_chat.jsonl, compared with its base as the command does by default).
Prints the command's wall time and, per model, from its results.json: generation seconds, tokens
generated, tokens/s, seconds per example and the mean answer length.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support_chat.jsonl"


def newest_support_run() -> str:
    """The newest finished run trained on support_chat.jsonl (what `make quickstart` trains)."""
    from tuneforge.registry import store

    runs = [
        run for run in store.list_runs() if run.status == "succeeded" and "support_chat" in str(run.config.get("data"))
    ]
    if not runs:
        raise SystemExit(
            "no finished run on support_chat.jsonl in the registry: run `make quickstart` first, or pass --model"
        )
    return runs[0].id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        help="run id, tuned model name or base model (default: the newest finished run on support_chat.jsonl)",
    )
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--against", help="as `tuneforge eval --against` (default: the run's base model)")
    args = parser.parse_args()
    model = args.model or newest_support_run()
    lines = EXAMPLES.read_text().splitlines()[: args.examples]
    if len(lines) < args.examples:
        raise SystemExit(f"{EXAMPLES} has only {len(lines)} examples")
    with tempfile.TemporaryDirectory() as directory:
        data, out = Path(directory) / "eval.jsonl", Path(directory) / "report"
        data.write_text("\n".join(lines) + "\n")
        command = [
            sys.executable,
            "-m",
            "tuneforge",
            "eval",
            model,
            "--data",
            str(data),
            "--no-probes",
            "--max-tokens",
            str(args.max_tokens),
            "--out",
            str(out),
        ]
        if args.against:
            command += ["--against", args.against]
        load = os.getloadavg()[0]
        began = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - began
        if finished.returncode != 0:
            raise SystemExit(f"tuneforge eval failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
        results = json.loads((out / "results.json").read_text())
    prompt_tokens = _mean_example_tokens(lines)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average {load:.1f} at start; "
        f"{results['examples']} examples of {prompt_tokens:.0f} tokens on average (chat template included), "
        f"greedy, at most {args.max_tokens} new tokens; `tuneforge eval {model} --no-probes` took {wall:.0f} s in all "
        f"(loading, generation, teacher-forced loss, report)\n"
    )
    print("| model | generation s | tokens generated | tokens/s | s per example | mean answer tokens | main metric |")
    print("|---|---|---|---|---|---|---|")
    main_metric = results["metrics"][0]
    for side in ("model", "against"):
        scores = results["scores"].get(side)
        if scores is None:
            continue
        print(
            f"| {results[side]} | {scores['generation_seconds']:.0f} | {scores['completion_tokens']} | "
            f"{scores['tokens_per_second']:.1f} | {scores['latency_seconds_per_example']:.2f} | "
            f"{scores['mean_output_tokens']:.0f} | {main_metric} {scores['means'][main_metric]:.3f} |"
        )


def _mean_example_tokens(lines: list[str]) -> float:
    from tuneforge.data.formats import parse_record
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.models.catalog import load_tokenizer

    examples = [parse_record(json.loads(line), number)[1].example for number, line in enumerate(lines, 1)]
    encoded = ChatTokenizer(load_tokenizer("smollm2-135m-instruct")).encode(examples)
    return sum(len(e.input_ids) for e in encoded) / len(encoded)


if __name__ == "__main__":
    main()
