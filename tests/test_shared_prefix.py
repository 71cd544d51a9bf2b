"""A padding-free row with the examples' common prefix laid once (shared_prefix.py) gives the
unshared row's loss, accuracy, counts and gradients, and really computes the prefix once."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import loss_and_grads, recipe_lora_model

from tuneforge.data.formats import parse_record
from tuneforge.data.tokenize import ChatTokenizer, TokenizedExample
from tuneforge.train.distributed import Ranks
from tuneforge.train.loop import collate_padding_free, weighted_token_loss
from tuneforge.train.shared_prefix import MIN_SAVED_SHARE, MIN_SHARED_TOKENS, common_prefix_length

SYSTEM = (
    "You are the support assistant of Ledger, an invoicing tool for freelancers. Answer briefly, name the "
    "tab and the button to use, and never promise refunds or dates on behalf of the company."
)


def support_chat(i: int, system: str | None = SYSTEM) -> dict:
    messages = [
        {"role": "user", "content": f"Question {i}: " + "how do I do this " * (i % 4)},
        {"role": "assistant", "content": f"Answer number {i}: open the tab." + " Then click." * (i % 3)},
    ]
    return {"messages": ([{"role": "system", "content": system}] if system else []) + messages}


def encoded(smol_tokenizer, records, prompt_loss_weight=0.0) -> list[TokenizedExample]:
    examples = [parse_record(r, 1)[1].example for r in records]
    return ChatTokenizer(smol_tokenizer, prompt_loss_weight).encode(examples)


def varlen_model(model_dir, method: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.train.padding_free import use_varlen_attention

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if method == "lora":
        torch.manual_seed(1)
        lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
        model = get_peft_model(model, lora)  # non-zero B: real gradients everywhere
    use_varlen_attention(model)
    return model.train()


def assert_same(reference, other):
    """The same loss, accuracy and counts, and each gradient within 5e-5 of its tensor's largest entry.
    Measured in fp32: every tensor within 3e-6 but layer 1's q projection under full fine-tuning,
    2.0e-5 (the unshared row against the padded batch: 2.7e-6). On learned_model_dir that gradient
    is ~1e4 times smaller than the largest, so rounding weighs more there: 2e-9 of the largest
    gradient. In float64 (all but the loss's fp32 softmax) the layouts agree to 3e-7 everywhere."""
    (loss_a, right_a, n_a, grads_a), (loss_b, right_b, n_b, grads_b) = reference, other
    assert abs(loss_a - loss_b) <= 1e-5 * abs(loss_a), (loss_a, loss_b)
    assert (right_a, n_a) == (right_b, n_b)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, grad in grads_a.items():
        scale = float(grad.abs().max())
        assert scale > 0, name
        gap = float((grads_b[name] - grad).abs().max()) / scale
        assert gap <= 5e-5, (name, gap)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("prompt_loss_weight", [0.0, 0.1])
@pytest.mark.parametrize("loss_options", [{}, {"sparse_head": False}, {"chunked": True}])
def test_shared_prefix_gives_the_unshared_loss_and_gradients(
    learned_model_dir, smol_tokenizer, method, prompt_loss_weight, loss_options
):
    examples = encoded(smol_tokenizer, [support_chat(i) for i in range(6)], prompt_loss_weight)
    unshared, shared = collate_padding_free(examples), collate_padding_free(examples, share_prefix=True)
    assert shared.shared_prefix >= 40 and shared.trained_tokens == pytest.approx(unshared.trained_tokens)
    model = varlen_model(learned_model_dir, method)
    reference = loss_and_grads(model, unshared, **loss_options)
    assert_same(reference, loss_and_grads(model, shared, **loss_options))
    if prompt_loss_weight:  # the shared part's predictions count once per example, as unshared
        assert reference[1] > 0


def test_the_shared_prefix_is_laid_once(smol_tokenizer):
    examples = encoded(smol_tokenizer, [support_chat(i) for i in range(5)])
    common = common_prefix_length([e.input_ids for e in examples])
    unshared, shared = collate_padding_free(examples), collate_padding_free(examples, share_prefix=True)
    assert shared.shared_prefix == common - 1
    saved = (len(examples) - 1) * (common - 1)
    assert shared.input_ids.shape[1] == unshared.input_ids.shape[1] - saved
    assert shared.tokens == unshared.tokens  # tok/s counts the data trained through, shared or not
    assert shared.input_ids[0, : common - 1].tolist() == examples[0].input_ids[: common - 1]
    starts = shared.sequence_starts.tolist()
    for example, start, end in zip(
        examples, starts[1:], starts[2:]
    ):  # each segment: its example from the last common token
        assert shared.input_ids[0, start:end].tolist() == example.input_ids[common - 1 :]
        assert shared.position_ids[0, start:end].tolist() == list(range(common - 1, len(example.input_ids)))


def test_each_family_of_examples_in_a_batch_shares_its_own_prefix(learned_model_dir, smol_tokenizer):
    """A task's examples (its system prompt), replay-like ones (the template's default system prompt)
    and one with a prompt of its own, shuffled together as a training batch is: each family's prefix
    is laid once, the lone example whole, and the loss and gradients are the unshared row's."""
    task = [support_chat(i) for i in range(4)]
    default_prompt = [support_chat(i, system=None) for i in range(10, 13)]
    lone = support_chat(20, system="Reply in French, whatever the question.")
    records = [task[0], default_prompt[0], lone, task[1], default_prompt[1], task[2], default_prompt[2], task[3]]
    examples = encoded(smol_tokenizer, records, prompt_loss_weight=0.1)
    unshared, shared = collate_padding_free(examples), collate_padding_free(examples, share_prefix=True)
    layout = shared.shared_layout
    families = [[examples[i] for i in (0, 3, 5, 7)], [examples[i] for i in (1, 4, 6)]]
    assert layout.part_lengths == tuple(common_prefix_length([e.input_ids for e in f]) - 1 for f in families)
    assert sorted(layout.segment_part) == [-1, 0, 0, 0, 0, 1, 1, 1]
    saved = sum((len(f) - 1) * shared for f, shared in zip(families, layout.part_lengths))
    assert shared.input_ids.shape[1] == unshared.input_ids.shape[1] - saved
    assert shared.tokens == unshared.tokens and shared.trained_tokens == pytest.approx(unshared.trained_tokens)
    model = varlen_model(learned_model_dir, "lora")
    assert_same(loss_and_grads(model, unshared), loss_and_grads(model, shared))


def test_validation_batches_share_their_prefix_and_score_as_unshared(learned_model_dir, smol_tokenizer):
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.loop import evaluate
    from tuneforge.train.sft import _validation_batches

    examples = encoded(smol_tokenizer, [support_chat(i) for i in range(11)], prompt_loss_weight=0.1)
    config = TrainConfig(data="x.jsonl", batch_size=4, precision="fp32").resolve(100, 512)
    shared, _ = _validation_batches(examples, config, 0, Ranks(), "cpu")
    unshared, _ = _validation_batches(examples, config.model_copy(update={"shared_prefix": False}), 0, Ranks(), "cpu")
    assert len(shared) == len(unshared) == 1  # 11 short chats: one batch of a step's token budget
    assert shared[0].shared_layout is not None and unshared[0].shared_layout is None
    assert sum(b.input_ids.numel() for b in shared) < sum(b.input_ids.numel() for b in unshared) - 8 * 40
    model = varlen_model(learned_model_dir, "lora")
    reference, figures = evaluate(model, unshared), evaluate(model, shared)
    assert figures["valid_loss"] == pytest.approx(reference["valid_loss"], rel=1e-5)
    assert figures["valid_mean_token_accuracy"] == reference["valid_mean_token_accuracy"] > 0


def test_validation_batches_hold_a_steps_examples_or_a_steps_tokens():
    from tuneforge.train.config import TOKENS_PER_STEP, TrainConfig
    from tuneforge.train.sft import _validation_batches

    def examples(count, length):  # each its own first token: nothing shared, a row as long as its examples
        return [
            TokenizedExample([10_000 + i, *range(length - 1)], np.ones(length, dtype=np.float32), length)
            for i in range(count)
        ]

    config = TrainConfig(data="x.jsonl", batch_size=4).resolve(100, 4096)
    short, _ = _validation_batches(examples(100, 50), config, 0, Ranks(), "cpu")
    per_batch = TOKENS_PER_STEP["cpu"] // 50
    assert [b.input_ids.shape[1] for b in short] == [per_batch * 50] * (100 // per_batch) + [100 % per_batch * 50]
    long, _ = _validation_batches(examples(10, 1500), config, 0, Ranks(), "cpu")
    assert [b.input_ids.shape[1] for b in long] == [4 * 1500, 4 * 1500, 2 * 1500]  # the step's 4


def test_without_a_common_prefix_the_row_is_the_plain_one(smol_tokenizer):
    # Different system prompts part after the template's few header tokens: too few to share.
    records = [support_chat(i, system=f"{i} {SYSTEM}") for i in range(4)]
    examples = encoded(smol_tokenizer, records)
    assert 0 < common_prefix_length([e.input_ids for e in examples]) - 1 < MIN_SHARED_TOKENS
    for batch_examples in (examples, examples[:1]):  # nor for a lone example
        plain, asked = collate_padding_free(batch_examples), collate_padding_free(batch_examples, share_prefix=True)
        assert asked.shared_prefix == 0 and asked.prediction_positions is None
        assert torch.equal(asked.input_ids, plain.input_ids) and torch.equal(asked.loss_weights, plain.loss_weights)


def test_a_prefix_too_short_for_the_examples_behind_it_is_not_shared():
    """20 shared tokens in front of 200-token examples: sharing would save 3 x 19 of 880 tokens (6 %),
    under MIN_SAVED_SHARE (8 %); in front of 30-token examples it saves 57 of 200 (28 %) and is shared."""
    prefix = list(range(1000, 1020))

    def example(i, own):
        ids = prefix + [2000 + 100 * i + t for t in range(own)]
        return TokenizedExample(ids, np.ones(len(ids), dtype=np.float32), len(ids))

    assert MIN_SAVED_SHARE == 0.08
    long_ones = [example(i, 200) for i in range(4)]
    assert collate_padding_free(long_ones, share_prefix=True).shared_prefix == 0
    short_ones = [example(i, 30) for i in range(4)]
    assert collate_padding_free(short_ones, share_prefix=True).shared_prefix == 19


@pytest.mark.parametrize("odd_one", ["the prefix and one token more", "inside the others' prefix"])
def test_an_example_with_next_to_nothing_of_its_own(learned_model_dir, smol_tokenizer, odd_one):
    """An example that is the common prefix and one token more; one that stops inside the others'
    prefix, so that the common prefix is all of it and its segment a single token."""
    full = encoded(smol_tokenizer, [support_chat(i) for i in range(3)], prompt_loss_weight=0.1)
    common = common_prefix_length([e.input_ids for e in full])
    a = full[0]
    if odd_one == "the prefix and one token more":
        ids = a.input_ids[:common] + [full[1].input_ids[common]]
        odd, expected_shared = TokenizedExample(ids, np.append(a.loss_weights[:common], 1.0), len(ids)), common - 1
    else:
        odd, expected_shared = TokenizedExample(a.input_ids[:30], a.loss_weights[:30].copy(), 30), 29
    examples = [full[0], odd, full[2]]
    shared = collate_padding_free(examples, share_prefix=True)
    assert shared.shared_prefix == expected_shared
    odd_segment = shared.sequence_starts[3] - shared.sequence_starts[2]
    assert odd_segment == (2 if odd_one == "the prefix and one token more" else 1)
    model = varlen_model(learned_model_dir, "lora")
    assert_same(loss_and_grads(model, collate_padding_free(examples)), loss_and_grads(model, shared))


def test_a_shared_prefix_row_refuses_other_attention(tiny_model_dir, smol_tokenizer):
    from transformers import AutoModelForCausalLM

    batch = collate_padding_free(encoded(smol_tokenizer, [support_chat(i) for i in range(3)]), share_prefix=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # transformers' SDPA would not see the prefix
    with pytest.raises(ValueError, match="shared prefix"):
        weighted_token_loss(model, batch)


@pytest.mark.parametrize("path", ["cpu flash", "sdpa per segment"])
def test_shared_prefix_attention_is_each_examples_causal_attention(path):
    """Two groups' shared parts, their segments and an example in no group (the replay examples of a
    task's batch share the template's default system prompt, the task's examples their own)."""
    from tuneforge.train import padding_free
    from tuneforge.train.padding_free import RowLayout

    torch.manual_seed(0)
    layout = RowLayout(part_lengths=(11, 4), segment_lengths=(5, 1, 9, 3, 7, 2), segment_part=(0, 0, 0, 1, 1, -1))
    tokens = layout.tokens
    query, key, value = (torch.randn(1, heads, tokens, 16) for heads in (6, 2, 2))  # grouped-query heads
    output_grad = torch.randn(1, tokens, 6, 16)

    def run(function):
        inputs = [t.detach().clone().requires_grad_() for t in (query, key, value)]
        output = function(*inputs)
        output.backward(output_grad)
        return [output] + [t.grad for t in inputs]

    def each_example_alone(q, k, v):
        """Every example with its own copy of its part, plain causal SDPA; a part's output is its
        first example's, its gradient summed over its examples."""
        pieces = [*layout.part_lengths, *layout.segment_lengths]
        parts = len(layout.part_lengths)
        split = [t.split(pieces, 2) for t in (q, k, v)]
        outputs = [None] * len(pieces)
        for index, part in enumerate(layout.segment_part):
            segment = [s[parts + index] for s in split]
            example = [torch.cat([s[part], own], dim=2) for s, own in zip(split, segment)] if part >= 0 else segment
            out = F.scaled_dot_product_attention(*example, is_causal=True, scale=0.25, enable_gqa=True)
            shared = layout.part_lengths[part] if part >= 0 else 0
            if part >= 0 and outputs[part] is None:
                outputs[part] = out[:, :, :shared]
            outputs[parts + index] = out[:, :, shared:]
        return torch.cat(outputs, dim=2).transpose(1, 2)

    if path == "cpu flash":
        ours = run(lambda q, k, v: padding_free.shared_prefix_attention(q, k, v, layout, 0.25))
    else:
        ours = run(lambda q, k, v: padding_free._attention_per_segment(q, k, v, layout, 0.25, 0.0))
    reference = run(each_example_alone)
    for mine, exact in zip(ours, reference):
        torch.testing.assert_close(mine, exact, atol=1e-5, rtol=1e-5)


def test_a_shared_prefix_row_under_every_speed_trick_and_gradient_checkpointing(tiny_model_dir, smol_tokenizer):
    """The recipe's model (fused LoRA, lean activations, varlen attention), recomputing each layer in
    backward or not: the shared row trains as the unshared one."""
    examples = encoded(smol_tokenizer, [support_chat(i) for i in range(4)], prompt_loss_weight=0.1)
    unshared, shared = collate_padding_free(examples), collate_padding_free(examples, share_prefix=True)
    for checkpointing in (False, True):
        model = recipe_lora_model(tiny_model_dir, checkpointing)
        assert_same(loss_and_grads(model, unshared), loss_and_grads(model, shared))
