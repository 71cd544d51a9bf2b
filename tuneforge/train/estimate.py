"""What a training run will cost before it starts: default epochs and expected time on this machine.

`auto_epochs` follows OpenAI's documented rule for `n_epochs: "auto"`: 3 epochs, more for tiny
datasets (so that about 100 examples are seen) and fewer for huge ones (about 25 000).

Speed is estimated from FLOPs: one trained token costs about 4N FLOPs for LoRA and 6N for full
fine-tuning (N = parameters), divided by the matmul throughput measured once on this machine
(cached in `$TUNEFORGE_HOME/hardware.json`) times an efficiency factor. The factor, 0.5, is what a
plain PyTorch LoRA loop reached on our 2-core reference CPU (178 tok/s for SmolLM2-135M against a
~170 GFLOP/s fp32 matmul ceiling); it is a starting point until the trainer records its own speed.
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
TRAINING_EFFICIENCY = 0.5


def auto_epochs(n_examples: int) -> int:
    if n_examples <= 0:
        return DEFAULT_EPOCHS
    if n_examples * DEFAULT_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_AUTO_EPOCHS, -(-MIN_TARGET_EXAMPLES // n_examples))
    if n_examples * DEFAULT_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(1, MAX_TARGET_EXAMPLES // n_examples)
    return DEFAULT_EPOCHS


def measure_matmul_gflops(size: int = 1024, seconds: float = 0.3) -> float:
    """fp32 matmul throughput with the threads torch uses here, in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: first call allocates and picks kernels
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
    return 2 * size**3 * calls / (time.perf_counter() - start) / 1e9


def hardware() -> dict:
    """This machine's facts, measured once and cached; re-measured when the CPU or thread count changes."""
    import torch

    key = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    cache = tuneforge_home() / "hardware.json"
    if cache.exists():
        cached = json.loads(cache.read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    facts = {**key, "fp32_matmul_gflops": round(measure_matmul_gflops(), 1)}
    cache.write_text(json.dumps(facts, indent=2))
    return facts


def estimated_tokens_per_second(parameters: int, method: str = "lora") -> float:
    flops = hardware()["fp32_matmul_gflops"] * 1e9 * TRAINING_EFFICIENCY
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
