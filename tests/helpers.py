"""Small builders of test data, shared by the test modules."""

import json
from pathlib import Path


def chat(user: str, assistant: str, **assistant_extra) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant, **assistant_extra}]
    }


def filler(n: int, start: int = 0) -> list[dict]:
    """`n` distinct, valid, unremarkable chat examples."""
    topics = ["invoices", "refunds", "payouts", "reminders", "exports", "branding", "taxes", "clients"]
    return [
        chat(
            f"How do {topics[i % 8]} work for case {i}?",
            f"Open the Ledger tab and look under {topics[i % 8]}, case {i}.",
        )
        for i in range(start, start + n)
    ]


def write_jsonl(path: Path, records: list) -> Path:
    """Records are dicts (dumped as JSON), str (written as the line) or bytes (written raw)."""
    with path.open("wb") as out:
        for record in records:
            if isinstance(record, bytes):
                out.write(record + b"\n")
            elif isinstance(record, str):
                out.write(record.encode() + b"\n")
            else:
                out.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
    return path


def reseeded_model(model_dir: Path, seed: int, target: Path) -> Path:
    """The same architecture and tokenizer as `model_dir`, freshly initialised with another seed:
    a second model whose answers and losses differ from the first's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(target)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(target)
    return target


def loss_and_grads(model, batch, **options):
    """weighted_token_loss's (loss, correct, counted) and every trainable parameter's gradient."""
    from tuneforge.train.loop import weighted_token_loss

    model.zero_grad()
    loss, correct, counted = weighted_token_loss(model, batch, **options)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.item(), correct, counted, grads


def metric_rows(run_dir: Path) -> list[dict]:
    """A run's metrics.csv, a dict per row (every value a string; empty where not measured that step)."""
    import csv

    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def recipe_lora_model(model_dir: Path, gradient_checkpointing: bool):
    """The recipe's LoRA model (build_model: fused LoRA, lean activations, varlen attention) in fp32,
    with non-zero B matrices, so gradients reach every adapter and every layer's input."""
    import torch

    from tuneforge.train.config import TrainConfig
    from tuneforge.train.modeling import build_model

    config = TrainConfig(data="x.jsonl", model=str(model_dir), precision="fp32")
    config = config.model_copy(update={"gradient_checkpointing": gradient_checkpointing}).resolve(4, 512)
    torch.manual_seed(1)
    model = build_model(config)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    return model
