"""Loss weights per token: assistant replies and their end-of-turn token are learned, prompts carry
`prompt_loss_weight`, and `weight: 0` turns never contribute."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from tuneforge.data.examples import Conversation, Message, Text
from tuneforge.data.formats import parse_record
from tuneforge.data.tokenize import ChatTokenizer, TemplateError, conversations_for

MULTI_TURN = Conversation(
    [
        Message("system", "You are Pip."),
        Message("user", "First question?"),
        Message("assistant", "An old reply we do not want.", weight=0),
        Message("user", "Second question?"),
        Message("assistant", "Hi there! The answer."),
    ]
)


def text_with_weight(tokenizer, encoded, weight: float) -> str:
    ids = [i for i, w in zip(encoded.input_ids, encoded.loss_weights) if w == weight]
    return tokenizer.decode(ids)


def test_only_the_trained_reply_and_its_end_of_turn_carry_weight(smol_tokenizer):
    [encoded] = ChatTokenizer(smol_tokenizer, prompt_loss_weight=0.0).encode([MULTI_TURN])
    assert text_with_weight(smol_tokenizer, encoded, 1.0) == "Hi there! The answer.<|im_end|>"
    assert set(np.unique(encoded.loss_weights)) == {0.0, 1.0}


@pytest.mark.parametrize("prompt_loss_weight", [0.0, 0.1, 1.0])
def test_prompt_tokens_carry_prompt_loss_weight_and_weight_zero_turns_none(smol_tokenizer, prompt_loss_weight):
    tokenizer = ChatTokenizer(smol_tokenizer, prompt_loss_weight=prompt_loss_weight)
    [encoded] = tokenizer.encode([MULTI_TURN])
    text, spans = tokenizer.render_with_spans(MULTI_TURN)
    offsets = smol_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    old_start, old_end, _ = spans[0]
    reply_start, reply_end, _ = spans[1]
    for (start, end), weight, token in zip(offsets, encoded.loss_weights, encoded.input_ids):
        if end > old_start and start < old_end:
            assert weight == 0.0, "a weight-0 turn contributed"
        elif end > reply_start and start < reply_end:
            assert weight == 1.0
        elif start >= reply_end and token in tokenizer.end_of_turn_ids and start < reply_end + 12:
            assert weight == 1.0
        elif not (start >= old_end and token in tokenizer.end_of_turn_ids and start < old_end + 12):
            assert weight == pytest.approx(prompt_loss_weight), smol_tokenizer.decode([token])


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "Capital of France?", "completion": "Paris"},
        {"prompt": "Capital of France?", "response": "Paris", "system": "Be brief."},
        {"instruction": "Name the capital.", "input": "France", "output": "Paris"},
        {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]},
        {
            "input": {"messages": [{"role": "user", "content": "Capital of France?"}]},
            "preferred_output": [{"role": "assistant", "content": "Paris"}],
            "non_preferred_output": [{"role": "assistant", "content": "Lyon"}],
        },
    ],
    ids=["prompt_completion", "prompt_response", "alpaca", "openai_chat", "openai_dpo"],
)
def test_every_format_trains_exactly_on_its_answer(smol_tokenizer, record):
    _, parsed, _ = parse_record(record, 1)
    encoded = ChatTokenizer(smol_tokenizer).encode(conversations_for(parsed.example))
    assert text_with_weight(smol_tokenizer, encoded[0], 1.0) == "Paris<|im_end|>"
    if len(encoded) == 2:  # preference: the rejected side too
        assert text_with_weight(smol_tokenizer, encoded[1], 1.0) == "Lyon<|im_end|>"


def test_raw_text_is_trained_on_every_token_and_ends_with_eos(smol_tokenizer):
    [encoded] = ChatTokenizer(smol_tokenizer).encode([Text("Lumen Ledger pays out in two business days.")])
    assert (encoded.loss_weights == 1.0).all()
    assert encoded.input_ids[-1] == smol_tokenizer.eos_token_id


def test_truncation_keeps_the_first_tokens_and_reports_full_length(smol_tokenizer):
    long = Conversation([Message("user", "word " * 50), Message("assistant", "ok")])
    [encoded] = ChatTokenizer(smol_tokenizer, max_length=16).encode([long])
    assert len(encoded.input_ids) == 16 and encoded.full_length > 16 and encoded.truncated
    assert encoded.trainable_tokens == 0


@pytest.fixture
def fresh_tokenizer(smol_tokenizer):
    """A private copy whose chat template a test may replace."""
    return AutoTokenizer.from_pretrained(smol_tokenizer.name_or_path)


def test_a_template_that_trims_content_still_locates_replies(fresh_tokenizer):
    fresh_tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + (m['content'] | trim) + '<|endoftext|>' }}{% "
        "endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tokenizer = ChatTokenizer(fresh_tokenizer)
    conversation = Conversation([Message("user", " Hello "), Message("assistant", "  Spaced reply  ")])
    [encoded] = tokenizer.encode([conversation])
    assert text_with_weight(fresh_tokenizer, encoded, 1.0) == "Spaced reply<|endoftext|>"


def test_a_template_that_never_closes_assistant_turns_is_refused(fresh_tokenizer):
    fresh_tokenizer.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}"
    with pytest.raises(TemplateError, match="never learn to stop"):
        ChatTokenizer(fresh_tokenizer).end_of_turn_ids


def test_a_tokenizer_without_a_chat_template_is_refused(fresh_tokenizer):
    fresh_tokenizer.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        ChatTokenizer(fresh_tokenizer)


def test_generation_prompt_matches_what_training_conditions_on(smol_tokenizer):
    tokenizer = ChatTokenizer(smol_tokenizer)
    prompt = tokenizer.render_prompt([Message("user", "Hi")])
    full, spans = tokenizer.render_with_spans(Conversation([Message("user", "Hi"), Message("assistant", "Hello")]))
    assert full.startswith(prompt) and spans[0][0] == len(prompt)


def test_batches_pad_with_the_pad_token_or_else_eos(smol_tokenizer):
    import copy

    assert ChatTokenizer(smol_tokenizer).pad_id == smol_tokenizer.pad_token_id
    without_pad = copy.deepcopy(smol_tokenizer)
    without_pad.pad_token = None
    assert without_pad.pad_token_id is None
    assert ChatTokenizer(without_pad).pad_id == smol_tokenizer.eos_token_id
