"""OpenAI's sampling options, honoured or refused, never ignored: frequency and presence penalties,
logit_bias, log-probs, JSON response formats (constrained decoding) and the 400s for the rest.

Engine tests run the tiny random model: its answers are noise, so valid JSON can only come from the
constraint. Three server tests drive the bundled model through the official client.

Run: `.venv/bin/python -m pytest -q tests/test_sampling_options.py`
"""

import json
import math

import jsonschema
import openai
import pytest
import torch
from server_process import ServerProcess

from tuneforge.data.examples import Message
from tuneforge.errors import InvalidOption
from tuneforge.inference.decode import BatchDecoder, HFStepper, Sampling
from tuneforge.inference.engine import Engine, TextDelta

CONVERSATION = [Message("user", "Describe a ticket as JSON.")]
TICKET = {
    "type": "object",
    "additionalProperties": False,
    "required": ["urgent", "priority", "team", "title"],
    "properties": {
        "urgent": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "team": {"enum": ["billing", "bugs"]},
        "title": {"type": "string", "maxLength": 12},
    },
}
TICKET_FORMAT = {"type": "json_schema", "json_schema": {"name": "ticket", "schema": TICKET, "strict": True}}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(str(tiny_model_dir), precision="fp32")


def token_id(engine, text: str) -> int:
    [token] = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    return token


def end_of_turn(engine) -> int:
    return min(engine.stop_ids)


def decoded(engine, prompts, budgets, sampling) -> list[list[int]]:
    rows = [[] for _ in prompts]
    for step in BatchDecoder(HFStepper(engine.model), prompts, budgets, sampling, frozenset(), engine.pad_id):
        for row, token in step:
            rows[row].append(token)
    return rows


@torch.no_grad()
def by_hand(
    engine, prompt: list[int], new_tokens: int, bias: dict[int, float], frequency: float, presence: float
) -> list[int]:
    """Greedy from the full sequence each step, OpenAI's formula applied to the raw logits."""
    ids, out = list(prompt), []
    for _ in range(new_tokens):
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        for token, value in bias.items():
            logits[token] += value
        for token in set(out):
            logits[token] -= out.count(token) * frequency + presence
        out.append(int(logits.argmax()))
        ids.append(out[-1])
    return out


# ----------------------------------------------------------------------- penalties and logit_bias
def test_penalties_and_logit_bias_follow_openais_formula_row_by_row(engine):
    prompts = [engine._chat_ids(CONVERSATION), engine._chat_ids([Message("user", "Hi")])]
    favoured = token_id(engine, " ticket")
    bias = {favoured: 10.0}
    # The bias alone makes the favoured token win every step; a frequency penalty of 4 takes 4 off it per
    # use, so it wins a few times and then never again; presence takes 2 off once: it keeps winning.
    only_bias = decoded(engine, prompts, [6, 6], Sampling(logit_bias=tuple(bias.items())))
    assert only_bias == [[favoured] * 6] * 2
    for frequency, presence in ((4.0, 0.0), (0.0, 2.0), (0.5, 1.5), (-1.0, 0.0)):
        sampling = Sampling(frequency_penalty=frequency, presence_penalty=presence, logit_bias=tuple(bias.items()))
        # Row 0 stops after 3 tokens: its penalty counts must leave the batch with it.
        rows = decoded(engine, prompts, [3, 10], sampling)
        assert rows == [
            by_hand(engine, prompts[0], 3, bias, frequency, presence),
            by_hand(engine, prompts[1], 10, bias, frequency, presence),
        ], (frequency, presence)
    rows = decoded(engine, prompts[1:], [10], Sampling(frequency_penalty=4.0, logit_bias=tuple(bias.items())))
    assert 1 <= rows[0].count(favoured) < 10 and rows[0][0] == favoured
    assert decoded(engine, prompts[1:], [10], Sampling(presence_penalty=2.0, logit_bias=tuple(bias.items()))) == [
        [favoured] * 10
    ]


def test_logit_bias_forces_or_bans_a_token_through_the_engine(engine):
    forced = token_id(engine, " ticket")
    [generation] = engine.complete(["Once upon a time"], max_new_tokens=4, logit_bias={forced: 100})
    assert generation.text == " ticket" * 4
    [free] = engine.complete(["Once upon a time"], max_new_tokens=1, logprobs=0)
    first = free.logprobs[0].token
    [banned] = engine.complete(["Once upon a time"], max_new_tokens=1, logit_bias={token_id(engine, first): -100})
    assert banned.text != first


def test_options_out_of_range_are_refused_with_the_request_field_named(engine):
    refused = {
        "logit_bias": {"logit_bias": {engine.vocab_size: 1}},
        "frequency_penalty": {"frequency_penalty": 2.5},
        "presence_penalty": {"presence_penalty": -3},
        "logprobs": {"logprobs": 21},
    }
    refused["logit_bias "] = {"logit_bias": {5: 101}}
    for param, options in refused.items():
        with pytest.raises(InvalidOption) as caught:
            engine.generate([CONVERSATION], max_new_tokens=2, **options)
        assert caught.value.param == param.strip()


def test_no_options_and_neutral_options_decode_the_same_tokens(engine):
    plain = engine.generate([CONVERSATION] * 2, max_new_tokens=12)
    neutral = engine.generate(
        [CONVERSATION] * 2,
        max_new_tokens=12,
        frequency_penalty=0.0,
        presence_penalty=0.0,
        logit_bias={},
        response_format={"type": "text"},
        logprobs=5,
    )
    assert [g.text for g in neutral] == [g.text for g in plain]  # asking for log-probs changes nothing chosen
    assert plain[0].logprobs is None and len(neutral[0].logprobs) == neutral[0].completion_tokens


# --------------------------------------------------------------------------------------- logprobs
@torch.no_grad()
def test_logprobs_are_the_models_log_softmax_sorted_and_hold_the_chosen_token(engine):
    prompt = "Refund case 12"
    [generation] = engine.complete([prompt], max_new_tokens=6, logprobs=5)
    ids = engine._text_ids(prompt)
    for entry in generation.logprobs:
        expected = torch.log_softmax(engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        token = expected.argmax().item()
        ids.append(token)
        assert entry.bytes == list(engine.vocabulary().token_bytes(token))
        assert entry.logprob == pytest.approx(expected[token].item(), abs=1e-4)
        top = [alternative.logprob for alternative in entry.top_logprobs]
        assert len(top) == 5 and top == sorted(top, reverse=True)
        assert entry.top_logprobs[0].token == entry.token and top[0] == entry.logprob  # greedy: the chosen is the top
        assert top == pytest.approx(expected.topk(5).values.tolist(), abs=1e-4)
    assert bytes(b for entry in generation.logprobs for b in entry.bytes).decode("utf-8", "replace") == generation.text
    # Sampled tokens are not the top one, but their log-prob is the same distribution's.
    [sampled] = engine.complete([prompt], max_new_tokens=8, temperature=1.5, seed=3, logprobs=20)
    for entry in sampled.logprobs:
        assert entry.logprob <= entry.top_logprobs[0].logprob
        listed = {alternative.token: alternative.logprob for alternative in entry.top_logprobs}
        assert listed.get(entry.token, entry.logprob) == entry.logprob
    # Log-probs are taken after logit_bias (said in decode.py): a +100 token is certain.
    [biased] = engine.complete([prompt], max_new_tokens=2, logit_bias={token_id(engine, " ticket"): 100}, logprobs=1)
    assert [entry.logprob for entry in biased.logprobs] == pytest.approx([0.0, 0.0], abs=1e-4)


def test_streamed_deltas_carry_the_logprobs_of_their_tokens(engine):
    *deltas, generation = engine.stream(CONVERSATION, max_new_tokens=10, logprobs=2)
    assert deltas and all(isinstance(delta, TextDelta) for delta in deltas)
    carried = [entry for delta in deltas for entry in delta.logprobs]
    assert carried == generation.logprobs[: len(carried)] and len(generation.logprobs) - len(carried) <= 2
    assert all(len(entry.top_logprobs) == 2 for entry in carried)


# ------------------------------------------------------------------------------ response_format
def test_json_schema_output_validates_on_every_row_of_a_sampled_batch(engine):
    generations = engine.generate(
        [CONVERSATION] * 4, max_new_tokens=80, temperature=1.0, seed=1, response_format=TICKET_FORMAT
    )
    for generation in generations:
        jsonschema.validate(json.loads(generation.text), TICKET)
        assert generation.finish_reason == "stop"
    assert len({g.text for g in generations}) > 1 and len({g.completion_tokens for g in generations}) > 1


def test_the_end_of_turn_waits_until_the_json_is_complete(engine):
    eager = {end_of_turn(engine): 100}  # a model that wants to stop at once
    [unconstrained] = engine.generate([CONVERSATION], max_new_tokens=40, logit_bias=eager)
    assert unconstrained.text == "" and unconstrained.completion_tokens == 1
    [constrained] = engine.generate([CONVERSATION], max_new_tokens=80, logit_bias=eager, response_format=TICKET_FORMAT)
    jsonschema.validate(json.loads(constrained.text), TICKET)
    assert constrained.finish_reason == "stop"


def test_json_object_output_parses_where_the_same_model_unconstrained_does_not(engine):
    # Quotes and braces favoured: unconstrained, the random model repeats them; constrained, they
    # can only build an object, and the end-of-turn comes as soon as it is closed.
    bias = {token_id(engine, '"'): 40, token_id(engine, "}"): 30, end_of_turn(engine): 100}
    [unconstrained] = engine.generate([CONVERSATION], max_new_tokens=12, logit_bias={token_id(engine, '"'): 40})
    with pytest.raises(json.JSONDecodeError):
        json.loads(unconstrained.text)
    [generation] = engine.generate(
        [CONVERSATION], max_new_tokens=40, logit_bias=bias, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(generation.text), dict) and generation.finish_reason == "stop"


def test_max_tokens_reached_inside_the_json_finishes_with_length(engine):
    [generation] = engine.generate([CONVERSATION], max_new_tokens=5, response_format=TICKET_FORMAT)
    assert generation.finish_reason == "length" and generation.text.startswith('{"urg')  # the first key, cut
    with pytest.raises(json.JSONDecodeError):
        json.loads(generation.text)


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "xml"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"schema": TICKET}},
        {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "nonsense"}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "bad", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}},
        },
    ],
    ids=["unknown type", "no json_schema", "no name", "invalid schema", "dangling $ref"],
)
def test_a_response_format_that_cannot_be_honoured_is_refused(engine, response_format):
    with pytest.raises(InvalidOption) as caught:
        engine.generate([CONVERSATION], max_new_tokens=2, response_format=response_format)
    assert caught.value.param == "response_format"


# ------------------------------------------------------------------- through the real server
@pytest.fixture(scope="module")
def client(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("options-home"), "--no-auth", "--no-worker").start()
    yield openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)
    server.stop()


MODEL = "smollm2-135m-instruct"
ASK = [
    {"role": "system", "content": "You answer in JSON."},
    {"role": "user", "content": 'What is the capital of France? Answer with an object with the key "capital".'},
]


def test_server_answers_json_object_and_json_schema_formats_with_json(client):
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=40, temperature=0, response_format={"type": "json_object"}
    )
    assert answer.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(answer.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string", "maxLength": 20}},
        "required": ["capital"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)


def test_server_returns_logprobs_in_openais_shapes(client):
    answer = client.chat.completions.create(
        model=MODEL, messages=ASK[1:], max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens - (answer.choices[0].finish_reason == "stop")
    for entry in content:
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].token == entry.token and entry.logprob <= 0
        assert bytes(entry.bytes).decode() == entry.token
    assert "".join(entry.token for entry in content).strip() == answer.choices[0].message.content
    streamed = client.chat.completions.create(
        model=MODEL, messages=ASK[1:], max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, stream=True
    )
    tokens = [
        entry.token
        for chunk in streamed
        for choice in chunk.choices
        if choice.logprobs
        for entry in choice.logprobs.content
    ]
    assert tokens == [entry.token for entry in content][: len(tokens)] and tokens
    prompt = "The capital of France is"
    completion = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    legacy = completion.choices[0].logprobs
    assert "".join(legacy.tokens) == completion.choices[0].text and legacy.text_offset[0] == len(prompt)
    assert all(
        len(top) in (2, 3) and math.isclose(top[token], logprob)
        for top, token, logprob in zip(legacy.top_logprobs, legacy.tokens, legacy.token_logprobs)
    )


@pytest.mark.parametrize(
    "extra, param, code",
    [
        (
            {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
            "tools",
            "unsupported_parameter",
        ),
        ({"extra_body": {"foo": 1}}, "foo", "unknown_parameter"),
        ({"extra_body": {"modalities": ["text", "audio"]}}, "modalities", "unsupported_parameter"),
        ({"logit_bias": {"999999": 5}}, "logit_bias", "invalid_value"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
            "response_format",
            "invalid_value",
        ),
        ({"top_logprobs": 2}, "top_logprobs", "invalid_value"),
    ],
)
def test_server_refuses_what_it_cannot_honour_naming_the_field(client, extra, param, code):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ASK[1:], max_tokens=2, **extra)
    assert caught.value.body["param"] == param and caught.value.body["code"] == code, caught.value.body


def test_server_accepts_fields_that_do_not_change_the_answer(client):
    answer = client.chat.completions.create(
        model=MODEL,
        messages=ASK[1:],
        max_tokens=2,
        user="u-1",
        store=False,
        metadata={"team": "support"},
        tool_choice="none",
        modalities=["text"],
    )
    assert answer.choices[0].message.content is not None
