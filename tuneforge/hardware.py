"""The machine, a leaf every stage may import (it imports none of them): which device a run uses,
whether bf16 runs natively there, the matmul ceiling measured once, peak memory, and what a training
run will cost before it starts (default epochs, expected time on this machine).

Devices are named as PyTorch names them: `cpu`, `cuda`, `cuda:N`, `mps`; `auto` is CUDA where
PyTorch sees a GPU, else the CPU (MPS only when asked for: its bf16 and kernels are too uneven to pick
it unasked).

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

from tuneforge.errors import UsageError
from tuneforge.settings import tuneforge_home

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"

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
# Not measured yet (no GPU benchmark has run: benchmarks/gpu.py): an assumed MFU for the time
# estimate on a CUDA GPU, between what padding-free LoRA reaches on small models and the ~45 % target.
GPU_EFFICIENCY_ASSUMED = 0.35
HARDWARE_FORMAT = 2  # hardware.json's layout; an older file is measured again


def auto_epochs(n_examples: int) -> int:
    if n_examples <= 0:
        return DEFAULT_EPOCHS
    if n_examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, -(-MIN_TARGET_EXAMPLES // n_examples))
    if n_examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return DEFAULT_EPOCHS


def resolve_device(requested: str = "auto") -> str:
    """The device a run will use, checked against what PyTorch sees here: `auto` becomes `cuda` or
    `cpu`; a device that is not there is a UsageError (naming what is)."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= count:
            seen = f"{count} CUDA device(s)" if count else "no CUDA GPU (torch.cuda.is_available() is False)"
            raise UsageError(
                f"device {requested}: PyTorch sees {seen} here",
                fix="Use device auto or cpu, or install a CUDA build of torch on a machine with a GPU.",
            )
    elif requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("device mps: PyTorch sees no Apple GPU here", fix="Use device auto or cpu.")
    return requested


def device_type(device: str) -> str:
    """cpu, cuda or mps: what autocast and the kernels are chosen by."""
    return device.split(":")[0]


def measure_matmul_gflops(
    size: int = 1024, seconds: float = 0.3, dtype_name: str = "float32", device: str = "cpu"
) -> float:
    """Matmul throughput on `device` (with the threads torch uses, on CPU), in GFLOP/s."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    torch.mm(a, b)  # warm-up: first call allocates and picks kernels
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
        if calls % 16 == 0:
            synchronize(device)  # a GPU queues work: time what ran, not what was queued
    synchronize(device)
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


def synchronize(device: str) -> None:
    import torch

    if device_type(device) == "cuda":
        torch.cuda.synchronize(device)


def machine_facts(device: str = "cpu") -> dict:
    """This machine's facts for `device`, measured once and cached; re-measured when the CPU, thread
    count or GPU changes."""
    import torch

    key = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "format": HARDWARE_FORMAT,
    }
    if device_type(device) == "cuda":
        key = {**key, "device": "cuda", "gpu": torch.cuda.get_device_name(device)}
    cache = tuneforge_home() / ("hardware.json" if device_type(device) == "cpu" else "hardware-cuda.json")
    if cache.exists():
        cached = json.loads(cache.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    # A GPU needs bigger matrices than a CPU to reach its rate.
    size = 4096 if device_type(device) == "cuda" else 1024
    facts = {**key, "fp32_matmul_gflops": round(measure_matmul_gflops(size, device=device), 1)}
    if bf16_is_fast(device):
        facts["bf16_matmul_gflops"] = round(measure_matmul_gflops(size, dtype_name="bfloat16", device=device), 1)
    cache.write_text(json.dumps(facts, indent=2))
    return facts


def estimated_tokens_per_second(
    parameters: int, method: str = "lora", precision: str = "auto", device: str = "cpu"
) -> float:
    facts = machine_facts(device)
    if precision == "auto":
        precision = "bf16" if "bf16_matmul_gflops" in facts else "fp32"
    efficiency = GPU_EFFICIENCY_ASSUMED if device_type(device) == "cuda" else EFFICIENCY[(method, precision)]
    flops = facts[f"{precision}_matmul_gflops"] * 1e9 * efficiency
    return flops / (FLOPS_PER_TOKEN[method] * parameters)


def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether bf16 matmuls run natively on `device`: a CUDA GPU with bf16, or a CPU with
    AVX512-BF16/AMX. (Without them PyTorch emulates bf16 on CPU, slower than fp32; fp16 on CPU is
    slower still.) MPS: no, so precision auto stays fp32 there."""
    import torch

    if device_type(device) == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type(device) != "cpu":
        return False
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def reset_peak_memory(device: str) -> None:
    import torch

    if device_type(device) == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: str) -> dict:
    """What a run's memory peak means on its device: on a GPU, the peak of tensors PyTorch allocated
    there (since `reset_peak_memory`); on a CPU, the process's peak resident memory (everything it
    holds, not only tensors)."""
    import resource

    import torch

    if device_type(device) == "cuda":
        return {
            "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            "memory": "cuda_allocated",
        }
    return {
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "memory": "host_rss",
    }


# ----------------------------------------------------------------------- process settings
KERNEL_CACHE_CAPACITY = "64"


def bound_kernel_caches() -> None:
    """Cap oneDNN's and PyTorch's CPU kernel caches unless the user set them (each cached shape holds
    its packed weights: unbounded, a training run's varying batch shapes grew the process by GBs; see
    train/host_memory.py and benchmarks/RESULTS.md). Read at first use, so this runs where a process
    starts work, before any matmul: the CLI's `main`, the benchmarks' package, the test session."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", KERNEL_CACHE_CAPACITY)
    os.environ.setdefault("LRU_CACHE_CAPACITY", KERNEL_CACHE_CAPACITY)
