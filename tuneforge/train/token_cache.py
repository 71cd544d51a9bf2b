"""Tokenised training data, cached by the dataset's hash, so a second run or a resume on the same
file starts training at once instead of parsing, checking and tokenising it again.

The key is everything the token ids and loss weights depend on: the file's sha256, the tokenizer
(its vocabulary and merges, special tokens and chat template), `prompt_loss_weight`, the maximum
length and this module's FORMAT. A change to any of them is a different key, never a stale hit.
Only files that passed every check are cached, so a hit needs no checking either.

A set is one `.npz` under `$TUNEFORGE_HOME/cache/tokens/`: all token ids end to end (int32), all
weights (float32), each example's offset and untruncated length, and the data kind.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from tuneforge.data.tokenize import ChatTokenizer, TokenizedExample
from tuneforge.settings import tuneforge_home

FORMAT = 1  # raise when tokenisation or the file layout changes


def cache_dir() -> Path:
    return tuneforge_home() / "cache" / "tokens"


def cache_key(data_sha256: str, tokenizer: ChatTokenizer) -> str:
    backend = tokenizer.tokenizer.backend_tokenizer.to_str()  # vocabulary, merges, normaliser, added tokens
    identity = {
        "format": FORMAT,
        "data": data_sha256,
        "tokenizer": hashlib.sha256(backend.encode()).hexdigest(),
        "template": tokenizer.tokenizer.chat_template,
        "special": tokenizer.special_tokens,
        "prompt_loss_weight": tokenizer.prompt_loss_weight,
        "max_length": tokenizer.max_length,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def load(key: str) -> tuple[list[TokenizedExample], str] | None:
    """The cached examples and data kind, or None when there are none (or the file is unreadable)."""
    path = cache_dir() / f"{key}.npz"
    try:
        with np.load(path) as saved:
            ids, weights, offsets, full_lengths = (
                saved["ids"],
                saved["weights"],
                saved["offsets"],
                saved["full_lengths"],
            )
            kind = str(saved["kind"])
    except (
        OSError,
        EOFError,
        KeyError,
        ValueError,
        zipfile.BadZipFile,
    ):  # missing, or cut short by a crash: tokenise again
        return None
    id_rows = np.split(ids, offsets[1:-1])
    weight_rows = np.split(weights, offsets[1:-1])
    examples = [
        TokenizedExample(row.tolist(), weight, int(full))
        for row, weight, full in zip(id_rows, weight_rows, full_lengths)
    ]
    return examples, kind


def save(key: str, examples: list[TokenizedExample], kind: str) -> None:
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    offsets = np.cumsum([0] + [len(e.input_ids) for e in examples], dtype=np.int64)
    partial = directory / f"{key}.{os.getpid()}.partial.npz"
    np.savez(
        partial,
        ids=np.fromiter((t for e in examples for t in e.input_ids), dtype=np.int32, count=int(offsets[-1])),
        weights=np.concatenate([e.loss_weights for e in examples]).astype(np.float32)
        if examples
        else np.zeros(0, np.float32),
        offsets=offsets,
        full_lengths=np.array([e.full_length for e in examples], dtype=np.int64),
        kind=np.array(kind),
    )
    partial.replace(directory / f"{key}.npz")  # atomic: a reader sees the whole file or none
