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


def decoded(items) -> dict:
    """A W&B record's items (history or config) as a dict."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def wandb_records(path):
    """The protobuf records of a W&B run's `.wandb` file (offline mode writes nothing else; wandb
    0.31 has no Python reader for it): a LevelDB-style log after a 7-byte header, in 32 KiB blocks,
    each record a 7-byte header (checksum, length, type: 1 whole, 2 first, 3 middle, 4 last part)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    raw, block = path.read_bytes(), 32768
    assert raw[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(raw):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the rest of a block is padding
            position += left
            continue
        data, position = raw[position + 7 : position + 7 + length], position + 7 + length
        pending = data if kind in (1, 2) else pending + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
