"""Generation speed: Hugging Face `generate` against Tuneforge's engine, on the bundled model.

Run: `python -m benchmarks.generate [--model smollm2-135m-instruct] [--new-tokens 64] [--threads N]
     [--llama-cpp-path DIR]`

Each configuration runs in its own process (so its peak RSS is its own): it loads the model and
warms up once; then the configurations take turns, one measurement each, `--repeats` rounds, and
the best of each is reported:
  - time to first token: one chat prompt, from the call until the first token (HF: the streamer's
    first new token; the engine: the first text delta of `Engine.stream`);
  - tokens/s at batch 1: `--new-tokens` new tokens for that prompt, over the whole call (prefill included);
  - tokens/s at batch 8: eight chat prompts of different lengths, left-padded, same count each.
Every configuration makes exactly `--new-tokens` tokens per prompt: end-of-turn is ignored
(`min_new_tokens` for HF; the engine's stop ids emptied), so all do the same work. "Same answer"
says whether the batch-1 greedy answer equals HF fp32's; "next-token loss" is what lower precisions
cost: the mean cross-entropy of the next token over the first QUALITY_TOKENS tokens of the support
chats (chat template applied; the same token ids for every configuration), computed the way each
decodes (the engine one cached step at a time).

llama.cpp runs through `llama-cpp-python` on the bundled GGUF itself (Q4_1: 4-bit weights, so it
reads ~4x fewer bytes per token than bf16), when the package imports: it is no Tuneforge
dependency, so install it out of the way and point `--llama-cpp-path` at it, e.g.
`pip install --no-deps --target /tmp/llama-cpp llama-cpp-python diskcache` (a source build of
llama.cpp: minutes). It has no batched-generation call, so its "batch 8" row runs the eight prompts
one after another; its prompt is the same chat-template text, and every prompt starts from an
empty KV cache (its prefix reuse would otherwise skip the repeated prompt's prefill).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

PROMPTS = [
    "Hi",
    "How do I export my invoices to a spreadsheet every month?",
    "Refund case 12: the customer paid twice. What now, and who pays the fee?",
    "Write a haiku about ledgers.",
    "What is 17 times 23?",
    "Explain photosynthesis to a child in two sentences.",
    "List three uses of a paperclip.",
    "Translate 'good morning, see you at the meeting' into French.",
]
CONFIGS = {
    "HF generate fp32": ("hf", "fp32"),
    "HF generate bf16 weights": ("hf", "bf16"),
    "Tuneforge engine fp32": ("engine", "fp32"),
    "Tuneforge engine bf16": ("engine", "bf16"),
    "Tuneforge engine int8 weights": ("engine", "int8"),
    "llama.cpp (llama-cpp-python) GGUF Q4_1": ("llama", "q4_1"),
}
LLAMA = "llama.cpp (llama-cpp-python) GGUF Q4_1"
QUALITY_TOKENS = 256


def quality_ids(model_name: str) -> list[int]:
    """QUALITY_TOKENS token ids of real chats, for the next-token loss."""
    from pathlib import Path

    from tuneforge.models.catalog import load_tokenizer

    tokenizer = load_tokenizer(model_name)
    ids = []
    for line in (Path(__file__).parent.parent / "examples" / "support_chat.jsonl").open():
        ids += tokenizer.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=False)
        if len(ids) >= QUALITY_TOKENS:
            return ids[:QUALITY_TOKENS]
    raise SystemExit("examples/support_chat.jsonl is too short for the next-token loss")


def mean_next_token_loss(logits, ids: list[int]) -> float:
    """logits (len(ids), vocab): row t predicts ids[t + 1]."""
    import torch

    targets = torch.tensor(ids[1:])
    return float(torch.nn.functional.cross_entropy(torch.as_tensor(logits)[:-1].float(), targets))


def timed(call) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def hf_runner(model_name: str, precision: str, new_tokens: int):
    """(first-token seconds, generate(conversations) -> texts) for Hugging Face `generate`."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.models.catalog import load_model, load_tokenizer

    model = load_model(model_name).eval()
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    tokenizer = load_tokenizer(model_name)
    chat = ChatTokenizer(tokenizer)
    pad = chat.pad_id

    def generate(conversations, streamer=None):
        inputs = tokenizer(
            [chat.render_prompt(c) for c in conversations],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        )
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=pad,
                streamer=streamer,
            )
        width = inputs["input_ids"].shape[1]
        return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.calls, self.at = 0, None

        def put(self, value):
            self.calls += 1  # the first call carries the prompt
            if self.calls == 2 and self.at is None:
                self.at = time.perf_counter()

        def end(self):
            pass

    def first_token(conversation) -> float:
        streamer, began = FirstToken(), time.perf_counter()
        generate([conversation], streamer)
        return streamer.at - began

    def loss(ids: list[int]) -> float:
        with torch.inference_mode():
            return mean_next_token_loss(model(torch.tensor([ids])).logits[0], ids)

    return first_token, generate, loss


def engine_runner(model_name: str, precision: str, new_tokens: int):
    from tuneforge.runs.models import engine as engine_for

    engine = engine_for(model_name, precision=precision)
    engine.stop_ids = frozenset()  # ignore end-of-turn: exactly new_tokens per prompt

    def generate(conversations):
        answers = engine.generate(conversations, max_new_tokens=new_tokens)
        assert all(a.completion_tokens == new_tokens for a in answers)
        return [a.text for a in answers]

    def first_token(conversation) -> float:
        began = time.perf_counter()
        for _ in engine.stream(conversation, max_new_tokens=new_tokens):
            return time.perf_counter() - began  # closing the stream ends the generation

    def loss(ids: list[int]) -> float:
        import torch

        stepper = engine.shared.stepper(engine.adapter, engine.precision)
        one = torch.ones(1, 1, dtype=torch.long)
        with torch.inference_mode():
            rows = [stepper.start(torch.tensor([ids[:1]]), one, torch.zeros(1, 1, dtype=torch.long), len(ids))]
            for t in range(1, len(ids)):
                rows.append(
                    stepper.step(torch.tensor([[ids[t]]]), torch.ones(1, t + 1, dtype=torch.long), torch.tensor([[t]]))
                )
        return mean_next_token_loss(torch.cat(rows), ids)

    return first_token, generate, loss


def llama_runner(model_name: str, precision: str, new_tokens: int):
    """llama.cpp on the GGUF the bundled model ships as; greedy, exactly `new_tokens` per prompt."""
    from llama_cpp import Llama

    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.models.catalog import BUNDLED, _bundled_gguf, load_tokenizer

    if model_name not in BUNDLED:
        raise SystemExit("llama.cpp runs on the bundled GGUF only")
    import torch

    llm = Llama(
        model_path=str(_bundled_gguf(BUNDLED[model_name])),
        n_ctx=1024,
        n_batch=512,
        n_threads=torch.get_num_threads(),
        verbose=False,
    )
    chat = ChatTokenizer(load_tokenizer(model_name))

    def tokens_for(conversation, on_first=None) -> list[int]:
        prompt = llm.tokenize(chat.render_prompt(conversation).encode(), add_bos=False, special=True)
        llm.reset()  # an empty KV cache: no reuse of the previous call's prefix
        out = []
        # Llama.generate never stops on end-of-turn by itself: exactly new_tokens, like the others.
        for token in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if not out and on_first:
                on_first()
            out.append(token)
            if len(out) == new_tokens:
                break
        return out

    def generate(conversations):
        return [llm.detokenize(tokens_for(c)).decode(errors="replace").strip() for c in conversations]

    def first_token(conversation) -> float:
        began, at = time.perf_counter(), []
        tokens_for(conversation, lambda: at.append(time.perf_counter()))
        return at[0] - began

    def loss(ids: list[int]) -> float:
        # A second instance that keeps every position's logits (the timed one keeps the last only).
        scorer = Llama(
            model_path=str(_bundled_gguf(BUNDLED[model_name])),
            n_ctx=1024,
            n_batch=512,
            logits_all=True,
            n_threads=torch.get_num_threads(),
            verbose=False,
        )
        scorer.eval(ids)
        return mean_next_token_loss(scorer.scores[: len(ids)], ids)

    return first_token, generate, loss


def serve_measurements(label: str, model_name: str, new_tokens: int, threads: int | None) -> None:
    """Child process: load one configuration, then take one measurement per line read from stdin.

    The parent interleaves its children (each measurement of each configuration in turn), so a
    busy spell on the machine spreads over all of them instead of landing on one.
    """
    import torch

    from tuneforge.data.examples import Message

    if threads:
        torch.set_num_threads(threads)
    kind, precision = CONFIGS[label]
    began = time.perf_counter()
    runner = {"hf": hf_runner, "engine": engine_runner, "llama": llama_runner}[kind]
    first_token, generate, loss = runner(model_name, precision, new_tokens)
    conversations = [[Message("user", text)] for text in PROMPTS]
    generate(conversations[:2])  # warm-up: one-off allocations, weight packing
    measures = {
        "first_token_s": lambda: first_token(conversations[1]),
        "batch1_s": lambda: timed(lambda: generate(conversations[1:2])),
        "batch8_s": lambda: timed(lambda: generate(conversations)),
    }
    print(json.dumps({"load_s": time.perf_counter() - began, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "done":
            final = {
                "answer": generate(conversations[1:2])[0],
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
            print(json.dumps({**final, "next_token_loss": loss(quality_ids(model_name))}), flush=True)  # after the RSS
            return
        print(json.dumps({command: measures[command]()}), flush=True)


class Child:
    def __init__(self, label: str, args):
        command = [
            sys.executable,
            "-m",
            "benchmarks.generate",
            "--one",
            label,
            "--model",
            args.model,
            "--new-tokens",
            str(args.new_tokens),
        ] + (["--threads", str(args.threads)] if args.threads else [])
        env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
        if label == LLAMA and args.llama_cpp_path:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.llama_cpp_path, env.get("PYTHONPATH")]))
        self.label, self.best = label, {}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, command: str | None = None) -> dict:
        if command:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: the measuring process died (exit {self.process.wait()})")
        reply = json.loads(line)
        for key, value in reply.items():
            if key.endswith("_s") and key != "load_s":
                self.best[key] = min(self.best.get(key, float("inf")), value)
        return reply


def machine() -> str:
    import torch

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, torch {torch.__version__}"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument(
        "--configs",
        help="comma-separated subset of: " + ", ".join(CONFIGS) + " (default: all; llama.cpp when it imports)",
    )
    parser.add_argument(
        "--llama-cpp-path", help="a directory holding the llama_cpp package (pip install --target ...)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        serve_measurements(args.one, args.model, args.new_tokens, args.threads)
        return
    if args.configs:
        labels = [label.strip() for label in args.configs.split(",")]
    else:
        labels = [label for label in CONFIGS if label != LLAMA or llama_cpp_imports(args.llama_cpp_path)]
        if LLAMA not in labels:
            print("llama.cpp: llama_cpp does not import here (see --llama-cpp-path); not measured", flush=True)
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {machine()}; load average at start {load_average()}", flush=True)
    children = []
    for label in labels:  # loaded one at a time: loading is not measured, but would disturb a measurement
        children.append(Child(label, args))
        children[-1].threads = children[-1].ask()["threads"]
    for _ in range(args.repeats):
        for measure in ("first_token_s", "batch1_s", "batch8_s"):
            for child in children:
                child.ask(measure)
    finals = {child.label: child.ask("done") for child in children}
    reference = finals.get("HF generate fp32", {}).get("answer")
    lines = [
        f"Generation on {args.model}, {args.new_tokens} new tokens per prompt, best of {args.repeats} "
        f"(configurations measured in turn)",
        "",
        "| configuration | threads | first token ms | tok/s batch 1 | tok/s batch 8 | peak RSS MB | same answer as "
        "HF fp32 | next-token loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for child in children:
        final, best = finals[child.label], child.best
        same = (
            "-"
            if reference is None or child.label == "HF generate fp32"
            else "yes"
            if final["answer"] == reference
            else f"first {common_prefix(final['answer'], reference)} chars"
        )
        lines.append(
            f"| {child.label} | {child.threads} | {best['first_token_s'] * 1000:.0f} | "
            f"{args.new_tokens / best['batch1_s']:.1f} | {8 * args.new_tokens / best['batch8_s']:.1f} | "
            f"{final['peak_rss_mb']:,.0f} | {same} | {final['next_token_loss']:.4f} |"
        )
    print(f"load average at end {load_average()}\n")
    print("\n".join(lines))


def llama_cpp_imports(path: str | None) -> bool:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [path, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", "import llama_cpp"], env=env, capture_output=True).returncode == 0


def common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


if __name__ == "__main__":
    main()
