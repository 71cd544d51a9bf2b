"""What the token cache buys: the time from a training file to its token ids, cold and cached.

Run: `python -m benchmarks.token_cache [--examples 100000]`

Builds `--examples` unique support chats (as benchmarks/data_check.py does) in a temporary Tuneforge
home, then times `tokenized_file` (what `tuneforge train` calls before loading the model) three
ways: with the cache off (read, check, tokenise), cold (the same, plus writing the cache) and warm
(loading the cache). Each measurement is the best of `--repeats`.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["TUNEFORGE_HOME"] = home
        from benchmarks.data_check import synthesize
        from tuneforge.data.tokenize import ChatTokenizer
        from tuneforge.models.catalog import load_tokenizer
        from tuneforge.train import token_cache
        from tuneforge.train.inputs import locate_data, tokenized_file

        path = Path(home) / "train.jsonl"
        synthesize(path, target_examples=args.examples)
        tokenizer = ChatTokenizer(load_tokenizer("smollm2-135m-instruct"), 0.0, 2048)
        file, _ = locate_data(path, None)

        def best(use_cache: bool, clear: bool) -> tuple[float, int]:
            times = []
            for _ in range(args.repeats):
                if clear:
                    for cached in token_cache.cache_dir().glob("*.npz"):
                        cached.unlink()
                began = time.perf_counter()
                examples, _ = tokenized_file(file, tokenizer, "training", use_cache)
                times.append(time.perf_counter() - began)
            return min(times), sum(len(e.input_ids) for e in examples)

        rows = [
            ("cache off: read, check, tokenise", *best(False, False)),
            ("cold: the same, then write the cache", *best(True, True)),
            ("warm: load the cache", *best(True, False)),
        ]
        size = sum(p.stat().st_size for p in token_cache.cache_dir().glob("*.npz"))
        data_size = path.stat().st_size
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"{args.examples:,} chats, {data_size / 1e6:.0f} MB; cache file {size / 1e6:.0f} MB\n"
    )
    print("| path | seconds | tokens | tokens/s |\n|---|---|---|---|")
    for label, seconds, tokens in rows:
        print(f"| {label} | {seconds:.1f} | {tokens:,} | {tokens / seconds:,.0f} |")


if __name__ == "__main__":
    main()
