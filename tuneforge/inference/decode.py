"""The decode loop: prefill a batch of prompts once, then one token per row per step from the KV cache.

Rows are left-padded so every row's next token sits in the last column. A row that emits an
end-of-turn id, or that its caller stops (a stop string matched), drops out of the batch: its KV
cache rows are removed, so finished rows cost nothing in later steps. Only the last position goes
through the output layer (`logits_to_keep=1`): at prefill that saves a (prompt, vocab) matmul.

Greedy decoding gives the same tokens as Hugging Face `generate` (tests/test_engine.py checks it);
sampling (temperature, top-p) draws from a `torch.Generator` seeded per call, so a seed reproduces
a run.

Per step, before a token is chosen, the logits go through the request's options, in OpenAI's order:
`logit_bias` is added, then frequency and presence penalties (over the tokens the row generated so
far) are subtracted; a row with a constraint (constrained.py: JSON output) then has every token
masked that would not keep its output a valid prefix. With none of these options a step does no
extra work: greedy stays bit-identical to `generate`. Log-probs, when asked for, are taken after
bias and penalties and before the constraint mask and the temperature (see `BatchDecoder`).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    frequency_penalty: float = 0.0  # OpenAI's: logit -= count x this, count = times the row generated the token
    presence_penalty: float = 0.0  # logit -= this once the row has generated the token
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    logprobs: int | None = None  # None: no log-probs; k: the chosen token's and the k most likely ones'

    @property
    def penalized(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty)

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
        return order.gather(-1, draw(sorted_probs, generator).unsqueeze(-1)).squeeze(-1)
    return draw(probs, generator)


def draw(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(rows, vocab) non-negative weights -> (rows,) indices, each drawn with probability weight / row sum.

    By inverting each row's cumulative sum at one uniform number: `torch.multinomial` took ~16 ms a
    step for 16 rows of a 49k vocabulary on a 2-core CPU (about a 135M model's whole decode step),
    this 0.4 ms (benchmarks/sampling.py). The first index whose cumulative sum exceeds u x total is
    drawn, so a zero weight, which leaves the sum unchanged, is never drawn. fp32 sums shift each
    token's mass by at most its rounding, ~1e-7 of the total (tests/test_engine.py checks frequencies)."""
    cumulative = weights.cumsum(-1)
    uniform = torch.rand(weights.shape[0], 1, generator=generator, dtype=cumulative.dtype)
    chosen = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)
    return chosen.squeeze(-1).clamp_max_(weights.shape[-1] - 1)  # u x total rounding up to total


class HFStepper:
    """Decode steps through the model's own forward and a transformers `DynamicCache`: any architecture,
    on any device. Inputs are moved to the model's device and the logits come back as CPU fp32, so the
    sampling around it (CPU generator, penalties, constraints) is the same on every device."""

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device

    def start(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor, capacity: int
    ) -> torch.Tensor:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        return self.step(input_ids, attention_mask, positions)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(batch, vocab) logits of the last position; attention_mask covers the cache and the new tokens."""
        logits = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            position_ids=positions.to(self.device),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        return logits.to(device="cpu", dtype=torch.float32)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows.to(self.device))


class BatchDecoder:
    """Iterate to get, per step, the `(row, token)` pairs of the rows still decoding.

    `stop(row)` ends a row early (its caller found a stop string). A row also ends after emitting
    one of `stop_ids` (that token is yielded) or after its `max_new_tokens[row]` tokens.

    `constraints[row]` (or None) is a constrained.py row constraint: it masks the row's logits each
    step and is told each token chosen. With `sampling.logprobs` set, `step_logprobs` holds, for
    each pair of the step just yielded, `(log-prob of the token, [(token id, log-prob)] of the
    k most likely)`: log_softmax of the logits after bias and penalties, before the constraint mask
    and temperature, so they are the model's own probabilities as the request adjusted them.
    """

    def __init__(
        self,
        stepper,
        prompts: list[list[int]],
        max_new_tokens: list[int],
        sampling: Sampling,
        stop_ids: frozenset[int],
        pad_id: int,
        constraints: list | None = None,
    ):
        self.stepper, self.prompts, self.max_new_tokens = stepper, prompts, max_new_tokens
        self.sampling, self.stop_ids, self.pad_id = sampling, stop_ids, pad_id
        self.constraints = constraints if constraints and any(constraints) else None
        self.step_logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None
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
        sampling, vocab = self.sampling, logits.shape[-1]
        bias = None
        if sampling.logit_bias:
            bias = torch.zeros(vocab, device=logits.device)
            ids, values = zip(*sampling.logit_bias)
            bias[list(ids)] = torch.tensor(values, dtype=torch.float32, device=logits.device)
        # (rows, vocab): how often each row generated each token
        counts = torch.zeros(len(rows), vocab, device=logits.device) if sampling.penalized else None
        masks = None
        if self.constraints:
            from tuneforge.inference import constrained

            masks = constrained.Masks(len(rows), vocab)
        while rows:
            if bias is not None:
                logits = logits.float() + bias
            if counts is not None:
                logits = (
                    logits.float() - counts * sampling.frequency_penalty - (counts > 0) * sampling.presence_penalty
                )
            if sampling.logprobs is not None:
                scores = torch.log_softmax(logits.float(), dim=-1)
            if masks is not None:
                logits = masks.apply(logits, [(i, self.constraints[row]) for i, row in enumerate(rows)])
            chosen = next_tokens(logits, sampling, generator)
            if sampling.logprobs is not None:
                self.step_logprobs = _logprobs(scores, chosen, sampling.logprobs)
            if counts is not None:
                counts[torch.arange(len(rows), device=chosen.device), chosen] += 1
            tokens = chosen.tolist()
            if self.constraints:
                for row, token in zip(rows, tokens):
                    if self.constraints[row] is not None:
                        self.constraints[row].accept(token)
            yield list(zip(rows, tokens))
            keep = []
            for i, (row, token) in enumerate(zip(rows, tokens)):
                produced[row] += 1
                if (
                    token not in self.stop_ids
                    and produced[row] < self.max_new_tokens[row]
                    and row not in self._stopped
                ):
                    keep.append(i)
            if not keep:
                return
            if len(keep) < len(rows):
                index = torch.tensor(keep)
                self.stepper.keep(index)
                attention_mask, positions = attention_mask[index], positions[index]
                counts = counts[index] if counts is not None else None
                rows, tokens = [rows[i] for i in keep], [tokens[i] for i in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=1)
            positions = positions + 1
            logits = self.stepper.step(torch.tensor(tokens).unsqueeze(1), attention_mask, positions)


def _logprobs(scores: torch.Tensor, chosen: torch.Tensor, k: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """(rows, vocab) log-probs and (rows,) chosen ids -> per row (chosen's log-prob, the k best (id, log-prob))."""
    picked = scores.gather(-1, chosen.unsqueeze(-1)).squeeze(-1).tolist()
    if k == 0:
        return [(p, []) for p in picked]
    values, ids = scores.topk(k, dim=-1)
    return [(p, list(zip(i, v))) for p, i, v in zip(picked, ids.tolist(), values.tolist())]
