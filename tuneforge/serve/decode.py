"""The decode loop: prefill a batch of prompts once, then one token per row per step from the KV cache.

Rows are left-padded so every row's next token sits in the last column. A row that emits an
end-of-turn id, or that its caller stops (a stop string matched), drops out of the batch: its KV
cache rows are removed, so finished rows cost nothing in later steps. Only the last position goes
through the output layer (`logits_to_keep=1`): at prefill that saves a (prompt, vocab) matmul.

Greedy decoding gives the same tokens as Hugging Face `generate` (tests/test_engine.py checks it);
sampling (temperature, top-p) draws from a `torch.Generator` seeded per call, so a seed reproduces
a run.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None

    def generator(self) -> torch.Generator | None:
        if self.temperature <= 0:
            return None
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def next_tokens(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> torch.Tensor:
    """(rows, vocab) logits -> (rows,) token ids."""
    if generator is None:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        # Nucleus: keep the most likely tokens whose mass reaches top_p (always at least the top one).
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class HFStepper:
    """Decode steps through the model's own forward and a transformers `DynamicCache`: any architecture."""

    def __init__(self, model):
        self.model = model

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
              capacity: int) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        return self.step(input_ids, attention_mask, positions)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) logits of the last position; attention_mask covers the cache and the new tokens."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                          past_key_values=self.cache, use_cache=True, logits_to_keep=1).logits[:, -1]

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)


class BatchDecoder:
    """Iterate to get, per step, the `(row, token)` pairs of the rows still decoding.

    `stop(row)` ends a row early (its caller found a stop string). A row also ends after emitting
    one of `stop_ids` (that token is yielded) or after its `max_new_tokens[row]` tokens.
    """

    def __init__(self, stepper, prompts: list[list[int]], max_new_tokens: list[int], sampling: Sampling,
                 stop_ids: frozenset[int], pad_id: int):
        self.stepper, self.prompts, self.max_new_tokens = stepper, prompts, max_new_tokens
        self.sampling, self.stop_ids, self.pad_id = sampling, stop_ids, pad_id
        self._stopped: set[int] = set()

    def stop(self, row: int) -> None:
        self._stopped.add(row)

    @torch.inference_mode()
    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        width = max(map(len, self.prompts))
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in self.prompts])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in self.prompts])
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # what `generate` uses with left padding
        generator = self.sampling.generator()
        rows = list(range(len(self.prompts)))  # original row index of each batch row
        produced = [0] * len(self.prompts)
        logits = self.stepper.start(input_ids, attention_mask, positions, width + max(self.max_new_tokens))
        positions = positions[:, -1:]
        while rows:
            tokens = next_tokens(logits, self.sampling, generator).tolist()
            yield list(zip(rows, tokens))
            keep = []
            for i, (row, token) in enumerate(zip(rows, tokens)):
                produced[row] += 1
                if token not in self.stop_ids and produced[row] < self.max_new_tokens[row] and row not in self._stopped:
                    keep.append(i)
            if not keep:
                return
            if len(keep) < len(rows):
                index = torch.tensor(keep)
                self.stepper.keep(index)
                attention_mask, positions = attention_mask[index], positions[index]
                rows, tokens = [rows[i] for i in keep], [tokens[i] for i in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
            positions = positions + 1
            logits = self.stepper.step(torch.tensor(tokens).unsqueeze(1), attention_mask, positions)
