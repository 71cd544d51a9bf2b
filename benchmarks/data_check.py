"""How fast and how lean is `tuneforge data check`? Run: `python -m benchmarks.data_check [--gigabyte]`.

Builds synthetic data from the bundled example chats (every example made unique, so nothing is
skipped as a duplicate), then runs the real CLI in a subprocess per measurement and reads that
child's wall time and peak RSS:
  1. 100 000 examples with tokenisation (bundled model's tokenizer and chat template) - target < 60 s;
  2. the same without tokenisation;
  3. with --gigabyte: a ~1 GB file, without and with tokens, next to a ~100 MB file, to show that
     peak memory does not grow with the file (only 16 bytes per example for duplicate detection).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support_chat.jsonl"


def synthesize(path: Path, target_examples: int | None = None, target_bytes: int | None = None) -> int:
    seeds = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    written = size = 0
    with path.open("w") as out:
        while (target_examples and written < target_examples) or (target_bytes and size < target_bytes):
            record = json.loads(json.dumps(seeds[written % len(seeds)]))
            record["messages"][1]["content"] += f" (ticket {written})"
            line = json.dumps(record, ensure_ascii=False) + "\n"
            out.write(line)
            written += 1
            size += len(line.encode())
    return written


def measure(path: Path, model: str) -> dict:
    """Run the CLI once in a child process; its wall time and its own peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "data", "check", str(path), "--json", "--model", model],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if result.returncode not in (0, 1):
        raise SystemExit(f"check failed: {result.stderr}")
    report = json.loads(result.stdout)
    if peak_kib <= before:
        raise SystemExit(
            "a child's peak RSS is only visible when it exceeds the previous child's: run one per process"
        )
    return {
        "wall_s": wall,
        "peak_rss_mb": peak_kib / 1024,
        "examples": report["examples"],
        "tokens": report["stats"].get("total_tokens"),
        "errors": report["errors"],
    }


def row(label: str, path: Path, m: dict) -> str:
    size_mb = path.stat().st_size / 1e6
    tokens = f"{m['tokens'] / m['wall_s']:,.0f}" if m["tokens"] else "-"
    return (
        f"| {label} | {size_mb:,.0f} MB | {m['examples']:,} | {m['wall_s']:.1f} | "
        f"{m['examples'] / m['wall_s']:,.0f} | {tokens} | {m['peak_rss_mb']:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabyte", action="store_true", help="also check a ~1 GB file (several minutes)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one configuration in a fresh process
    args = parser.parse_args()
    if args.one:
        path, model = args.one.split("::")
        print(json.dumps(measure(Path(path), model)))
        return
    header = [
        "| run | file | examples | wall s | examples/s | tokens/s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = [
            ("100k examples, tokens", 100_000, None, "smollm2-135m-instruct"),
            ("100k examples, no tokens", 100_000, None, "none"),
        ]
        if args.gigabyte:
            runs += [
                ("100 MB, no tokens", None, 100_000_000, "none"),
                ("1 GB, no tokens", None, 1_000_000_000, "none"),
                ("1 GB, tokens", None, 1_000_000_000, "smollm2-135m-instruct"),
            ]
        files: dict[tuple, Path] = {}
        for label, n, size, model in runs:
            key = (n, size)
            if key not in files:
                files[key] = Path(tmp) / f"data-{n or size}.jsonl"
                synthesize(files[key], n, size)
            # Each measurement in its own process, so each peak RSS is that run's alone.
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.data_check", "--one", f"{files[key]}::{model}"],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(row(label, files[key], json.loads(out.stdout)))
            print(rows[-1], flush=True)
    print(f"\n`tuneforge data check` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print("\n".join(header + rows))


if __name__ == "__main__":
    main()
