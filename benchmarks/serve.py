"""Chat through the OpenAI-compatible server, measured as a client sees it: latency, time to first
token and tokens/s for a base model and a tuned model, with the official `openai` client.

Run: `python -m benchmarks.serve [--tuned ft:...] [--requests 8] [--max-tokens 64]`

Starts `tuneforge serve --no-auth --no-worker` on a free loopback port over your Tuneforge home (so
your tuned models are there; default: the newest tuned model of the registry), warms each model up
with one request (the first loads it), then sends `--requests` chat requests one after another,
plain and streamed, with greedy decoding and a fixed token budget.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

PROMPTS = [
    "How do I send a reminder for an overdue invoice?",
    "Can I change the currency of an invoice after sending it?",
    "My payout is late. What should I check?",
    "How do I export last year's invoices for my accountant?",
    "Can clients pay by bank transfer?",
    "How do I add my logo to invoices?",
    "What happens when a card payment fails?",
    "How do I give my bookkeeper access?",
]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "serve", "--no-auth", "--no-worker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return process
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def measure(client, model: str, requests: int, max_tokens: int) -> dict:
    messages = lambda i: [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]  # noqa: E731
    client.chat.completions.create(model=model, messages=messages(0), max_tokens=4, temperature=0)  # loads the model
    latencies, tokens = [], 0
    for i in range(requests):
        began = time.perf_counter()
        answer = client.chat.completions.create(
            model=model, messages=messages(i), max_tokens=max_tokens, temperature=0
        )
        latencies.append(time.perf_counter() - began)
        tokens += answer.usage.completion_tokens
    first_tokens, stream_tokens, stream_seconds = [], 0, 0.0
    for i in range(requests):
        began, first = time.perf_counter(), None
        stream = client.chat.completions.create(
            model=model,
            messages=messages(i),
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - began
            if chunk.usage:
                stream_tokens += chunk.usage.completion_tokens
        stream_seconds += time.perf_counter() - began
        first_tokens.append(first or 0.0)
    return {
        "model": model,
        "requests": requests,
        "p50_s": statistics.median(latencies),
        "max_s": max(latencies),
        "mean_tokens": tokens / requests,
        "tokens_per_s": tokens / sum(latencies),
        "ttft_p50_s": statistics.median(first_tokens),
        "stream_tokens_per_s": stream_tokens / stream_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--tuned", default=None, help="A tuned model name (default: the newest in the registry).")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    import openai

    port = free_port()
    server = start_server(port)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        tuned = args.tuned or next((m.id for m in client.models.list() if m.id.startswith("ft:")), None)
        rows = [measure(client, args.base, args.requests, args.max_tokens)]
        if tuned:
            rows.append(measure(client, tuned, args.requests, args.max_tokens))
        else:
            print("no tuned model in the registry: train one (make quickstart) to measure it too")
    finally:
        server.terminate()
        server.wait(timeout=30)
    load = os.getloadavg()[0]
    print(
        f"\nchat through `tuneforge serve`, {args.requests} requests each, greedy, max_tokens={args.max_tokens}, "
        f"load average {load:.2f}\n"
    )
    print(
        "| model | p50 latency s | max s | mean completion tokens | tokens/s | stream TTFT p50 s | stream tokens/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['p50_s']:.2f} | {r['max_s']:.2f} | {r['mean_tokens']:.1f} | "
            f"{r['tokens_per_s']:.1f} | "
            f"{r['ttft_p50_s']:.3f} | {r['stream_tokens_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
