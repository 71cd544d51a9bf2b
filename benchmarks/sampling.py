"""Sampling cost: `torch.multinomial` against the engine's inverse-CDF draw (inference/decode.py `draw`).

Run: `python -m benchmarks.sampling [--model smollm2-135m-instruct] [--rows 16] [--new-tokens 160] [--repeats 3]`

Two rows per sampler, best of `--repeats`:
  - one draw: (rows, vocab) probabilities -> one token per row, the sampler alone;
  - generate: the engine answering `--rows` chat prompts with `--new-tokens` tokens each at
    temperature 1 (end-of-turn ignored, so both do the same number of steps), as the forgetting
    guard samples its replay answers (tuneforge/runs/general.py: 16 prompts a batch, 160 tokens).
Both samplers draw from the same distribution (tests/test_engine.py checks the draw's frequencies);
the tokens differ because they use the random stream differently.
"""

import argparse

import torch

from benchmarks.generate import timed
from tuneforge.data.examples import Message
from tuneforge.inference import decode
from tuneforge.runs.models import engine

PROMPTS = [f"Tell me something useful about topic number {i}, in a few sentences." for i in range(64)]


def multinomial(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(weights, 1, generator=generator).squeeze(-1)


def best_of(repeats: int, call) -> float:
    return min(timed(call) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    generator = engine(args.model)
    generator.stop_ids = frozenset()  # every row runs all --new-tokens steps
    conversations = [[Message("user", p)] for p in PROMPTS[: args.rows]]
    probabilities = torch.softmax(torch.randn(args.rows, generator.vocab_size) * 3, dim=-1)
    ours = decode.draw
    print(f"{args.model}, {args.rows} rows, vocabulary {generator.vocab_size}, {torch.get_num_threads()} threads")
    print("| sampler | one draw (ms) | generate (s) | tokens/s |")
    print("|---|---|---|---|")
    for name, sampler in (("torch.multinomial", multinomial), ("inverse CDF (decode.draw)", ours)):
        random = torch.Generator().manual_seed(0)
        one = best_of(args.repeats * 30, lambda: sampler(probabilities, random)) * 1000
        decode.draw = sampler  # next_tokens looks it up at each step
        try:
            generator.generate(conversations[:2], max_new_tokens=4, temperature=1.0, seed=0)  # warm-up
            seconds = best_of(
                args.repeats,
                lambda: generator.generate(conversations, max_new_tokens=args.new_tokens, temperature=1.0, seed=0),
            )
        finally:
            decode.draw = ours
        print(f"| {name} | {one:.2f} | {seconds:.1f} | {args.rows * args.new_tokens / seconds:.0f} |")


if __name__ == "__main__":
    main()
