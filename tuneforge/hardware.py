"""The machine, a leaf every stage may import (it imports none of them): whether bf16 runs natively,
the matmul ceiling measured once, and what a training run will cost before it starts (default
epochs, expected time on this machine).

`auto_epochs` follows OpenAI's documented rule for `n_epochs: "auto"`: 3 epochs, more for tiny
datasets (so that about 100 examples are seen) and fewer for huge ones (about 25 000).

Speed is estimated from FLOPs: one trained token costs about 4N FLOPs for LoRA and 6N for full
fine-tuning (N = parameters), divided by the matmul throughput measured once on this machine
(cached in `$TUNEFORGE_HOME/hardware.json`, fp32 and, where it runs natively, bf16) times the
fraction of it Tuneforge's trainer reaches (`EFFICIENCY`: its MFU in benchmarks/RESULTS.md on the
2-core reference CPU, batch 8 x 256 tokens). Precision is what `precision: auto` picks here.
"""

import json
import os
import platform
import time

from tuneforge.settings import tuneforge_home

DEFAULT_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MAX_AUTO_EPOCHS = 25
FLOPS_PER_TOKEN = {"lora": 4, "full": 6}
# Tuneforge's tokens/s x FLOPs per token over `measure_matmul_gflops` (1024^2, which reads ~1.17x
# the benchmark's 2048^2: 412 vs 351 GFLOP/s bf16) on the reference CPU. bf16 from
# benchmarks/RESULTS.md 2026-11-22: LoRA 315 tok/s (all tokens), full 223, against a 2048^2 bf16
# ceiling of 370 and 350; fp32 from 2026-11-21 (evening): LoRA 182, full 124. For the quickstart's
# data (shorter chats than the benchmark's) that gives ~273 tok/s, ~4.6 min for its two epochs; it
# trained them in 3 min 38 s on 2026-11-22: the estimate errs long.
EFFICIENCY = {("lora", "bf16"): 0.39, ("lora", "fp32"): 0.60, ("full", "bf16"): 0.44, ("full", "fp32"): 0.60}
HARDWARE_FORMAT = 2  # hardware.json's layout; an older file is measured again


def auto_epochs(n_examples: int) -> int:
    if n_examples <= 0:
        return DEFAULT_EPOCHS
    if n_examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, -(-MIN_TARGET_EXAMPLES // n_examples))
    if n_examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return DEFAULT_EPOCHS


def measure_matmul_gflops(size: int = 1024, seconds: float = 0.3, dtype_name: str = "float32") -> float:
    """Matmul throughput with the threads torch uses here, in GFLOP/s."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # warm-up: first call allocates and picks kernels
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


def machine_facts() -> dict:
    """This machine's facts, measured once and cached; re-measured when the CPU or thread count changes."""
    import torch

    key = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "format": HARDWARE_FORMAT,
    }
    cache = tuneforge_home() / "hardware.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    facts = {**key, "fp32_matmul_gflops": round(measure_matmul_gflops(), 1)}
    if bf16_is_fast():
        facts["bf16_matmul_gflops"] = round(measure_matmul_gflops(dtype_name="bfloat16"), 1)
    cache.write_text(json.dumps(facts, indent=2))
    return facts


def estimated_tokens_per_second(parameters: int, method: str = "lora", precision: str = "auto") -> float:
    facts = machine_facts()
    if precision == "auto":
        precision = "bf16" if "bf16_matmul_gflops" in facts else "fp32"
    flops = facts[f"{precision}_matmul_gflops"] * 1e9 * EFFICIENCY[(method, precision)]
    return flops / (FLOPS_PER_TOKEN[method] * parameters)


def bf16_is_fast() -> bool:
    """Whether bf16 matmuls run natively here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX.
    (Without them PyTorch emulates bf16 on CPU, slower than fp32; fp16 on CPU is slower still.)"""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ----------------------------------------------------------------------- process settings
KERNEL_CACHE_CAPACITY = "64"


def bound_kernel_caches() -> None:
    """Cap oneDNN's and PyTorch's CPU kernel caches unless the user set them (each cached shape holds
    its packed weights: unbounded, a training run's varying batch shapes grew the process by GBs; see
    train/host_memory.py and benchmarks/RESULTS.md). Read at first use, so this runs where a process
    starts work, before any matmul: the CLI's `main`, the benchmarks' package, the test session."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_CAPACITY)
    os.environ.setdefault("LRU_CACHE_CAPACITY", KERNEL_CACHE_CAPACITY)
