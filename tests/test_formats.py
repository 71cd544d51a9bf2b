"""parse_record: every accepted format becomes the right canonical example; iter_records reads each file kind."""

import json

import pytest

from tuneforge.data.examples import Conversation, Message, Preference, Text, to_openai_record
from tuneforge.data.formats import parse_record
from tuneforge.data.reader import Record, iter_records
from tuneforge.errors import UsageError


def parse(value, line=1, expect_format=None):
    fmt, parsed, findings = parse_record(value, line)
    assert parsed is not None, [(f.code, f.field, f.message) for f in findings]
    if expect_format:
        assert fmt.name == expect_format
    return parsed


def paths(parsed):
    return [f.path for f in parsed.fields]


def roles(messages):
    return [(m.role, m.content) for m in messages]


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


# ----------------------------------------------------------------------------------- openai_chat
def test_openai_chat_keeps_roles_weights_names_tool_calls_and_tools():
    record = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi", "name": "ann"},
            {"role": "assistant", "content": "Old answer", "weight": 0},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL]},
            {"role": "tool", "content": "12C", "tool_call_id": "call_1"},
            {"role": "assistant", "content": "It is 12C."},
        ],
        "tools": TOOLS,
    }
    fmt, parsed, findings = parse_record(record, 7)
    assert fmt.name == "openai_chat" and findings == []
    convo = parsed.example
    assert isinstance(convo, Conversation) and convo.tools == TOOLS
    assert [(m.role, m.content, m.weight) for m in convo.messages] == [
        ("system", "Be brief.", 1),
        ("user", "Hi", 1),
        ("assistant", "Old answer", 0),
        ("user", "Weather in Oslo?", 1),
        ("assistant", None, 1),
        ("tool", "12C", 1),
        ("assistant", "It is 12C.", 1),
    ]
    assert convo.messages[1].name == "ann"
    assert convo.messages[4].tool_calls == [CALL]
    assert convo.messages[5].tool_call_id == "call_1"
    assert convo.split_at_last_reply()[1].content == "It is 12C."
    # The null content of the tool-call turn is not a text field.
    assert paths(parsed) == [f"messages[{i}].content" for i in (0, 1, 2, 3, 5, 6)]


def test_openai_chat_joins_text_content_parts():
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Hi"},
        ]
    }
    assert parse(record).example.messages[0] == Message("user", "Hello there")


def test_openai_chat_maps_developer_role_to_system():
    record = {
        "messages": [
            {"role": "developer", "content": "Rules"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ]
    }
    assert roles(parse(record, expect_format="openai_chat").example.messages) == [
        ("system", "Rules"),
        ("user", "Q"),
        ("assistant", "A"),
    ]


# --------------------------------------------------------------------------------- single turn
def test_prompt_completion_becomes_user_and_assistant_turn():
    parsed = parse({"prompt": "2+2?", "completion": "4"}, expect_format="prompt_completion")
    assert parsed.example == Conversation([Message("user", "2+2?"), Message("assistant", "4")])
    assert paths(parsed) == ["prompt", "completion"]


def test_prompt_response_without_system():
    parsed = parse({"prompt": "Name a colour", "response": "Blue"}, expect_format="prompt_response")
    assert roles(parsed.example.messages) == [("user", "Name a colour"), ("assistant", "Blue")]


def test_prompt_response_with_system_puts_system_first():
    parsed = parse(
        {"system": "Terse.", "prompt": "Name a colour", "response": "Blue"}, expect_format="prompt_response"
    )
    assert roles(parsed.example.messages) == [("system", "Terse."), ("user", "Name a colour"), ("assistant", "Blue")]
    assert paths(parsed) == ["system", "prompt", "response"]


def test_alpaca_without_input_uses_instruction_as_user_turn():
    parsed = parse({"instruction": "Say hi", "input": "", "output": "Hi"}, expect_format="alpaca")
    assert roles(parsed.example.messages) == [("user", "Say hi"), ("assistant", "Hi")]
    assert paths(parsed) == ["instruction", "output"]


def test_alpaca_with_input_joins_instruction_and_input_with_blank_line():
    record = {"system": "Translator.", "instruction": "Translate to French", "input": "cat", "output": "chat"}
    parsed = parse(record, expect_format="alpaca")
    assert roles(parsed.example.messages) == [
        ("system", "Translator."),
        ("user", "Translate to French\n\ncat"),
        ("assistant", "chat"),
    ]
    assert paths(parsed) == ["system", "instruction", "output", "input"]


# ---------------------------------------------------------------------------------- preferences
PROMPT = {"messages": [{"role": "user", "content": "Capital of France?"}]}


@pytest.mark.parametrize(
    "chosen_key,rejected_key",
    [("preferred_output", "non_preferred_output"), ("preferred_completion", "non_preferred_completion")],
)
def test_openai_dpo_with_message_list_outputs(chosen_key, rejected_key):
    record = {
        "input": PROMPT,
        chosen_key: [{"role": "assistant", "content": "Paris"}],
        rejected_key: [{"role": "assistant", "content": "Lyon"}],
    }
    parsed = parse(record, expect_format="openai_dpo")
    assert parsed.example == Preference(
        [Message("user", "Capital of France?")], [Message("assistant", "Paris")], [Message("assistant", "Lyon")]
    )
    assert paths(parsed) == ["input.messages[0].content", f"{chosen_key}[0].content", f"{rejected_key}[0].content"]


def test_openai_dpo_with_string_outputs_and_tools():
    record = {"input": {**PROMPT, "tools": TOOLS}, "preferred_output": "Paris", "non_preferred_output": "Lyon"}
    parsed = parse(record, expect_format="openai_dpo")
    assert roles(parsed.example.chosen) == [("assistant", "Paris")]
    assert roles(parsed.example.rejected) == [("assistant", "Lyon")]
    assert parsed.example.tools == TOOLS
    assert paths(parsed) == ["input.messages[0].content", "preferred_output", "non_preferred_output"]


def test_prompt_chosen_rejected_with_strings():
    parsed = parse({"prompt": "Q", "chosen": "good", "rejected": "bad"}, expect_format="prompt_chosen_rejected")
    assert parsed.example == Preference(
        [Message("user", "Q")], [Message("assistant", "good")], [Message("assistant", "bad")]
    )
    assert paths(parsed) == ["chosen", "rejected", "prompt"]


def test_prompt_chosen_rejected_with_message_lists():
    record = {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    example = parse(record, expect_format="prompt_chosen_rejected").example
    assert roles(example.prompt) == [("system", "S"), ("user", "Q")]
    assert roles(example.chosen) == [("assistant", "good")] and roles(example.rejected) == [("assistant", "bad")]


def test_prompt_chosen_rejected_implicit_prompt_splits_off_shared_messages():
    shared = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    record = {
        "chosen": [*shared, {"role": "assistant", "content": "good"}],
        "rejected": [*shared, {"role": "assistant", "content": "bad"}],
    }
    example = parse(record, expect_format="prompt_chosen_rejected").example
    assert roles(example.prompt) == [("system", "S"), ("user", "Q")]
    assert roles(example.chosen) == [("assistant", "good")]
    assert roles(example.rejected) == [("assistant", "bad")]


# ------------------------------------------------------------------------------------------ text
def test_text_record_and_plain_string_become_text():
    parsed = parse({"text": "Once upon a time."}, expect_format="text")
    assert parsed.example == Text("Once upon a time.") and paths(parsed) == ["text"]
    fmt, block, findings = parse_record("A block\nof text", 3)
    assert fmt.name == "text" and block.example == Text("A block\nof text") and findings == []


def test_fields_carry_role_and_text_of_users_own_data():
    parsed = parse({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})
    assert [(f.path, f.text, f.role) for f in parsed.fields] == [
        ("messages[0].content", "Q", "user"),
        ("messages[1].content", "A", "assistant"),
    ]


# ------------------------------------------------------------------------------------ round trip
def test_conversation_with_weight_zero_turn_round_trips_through_openai_record():
    original = parse(
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1", "weight": 0},
                {"role": "user", "content": "Q2"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "content": "12C", "tool_call_id": "call_1"},
                {"role": "assistant", "content": "A2"},
            ],
            "tools": TOOLS,
        }
    ).example
    record = to_openai_record(original)
    assert record["messages"][2]["weight"] == 0 and "weight" not in record["messages"][6]
    fmt, again, findings = parse_record(json.loads(json.dumps(record)), 1)
    assert fmt.name == "openai_chat" and findings == []
    assert again.example == original


def test_preference_round_trips_through_openai_dpo_record():
    original = parse({"prompt": "Q", "chosen": "good", "rejected": "bad"}).example
    record = to_openai_record(original)
    assert set(record) == {"input", "preferred_output", "non_preferred_output"}
    fmt, again, _ = parse_record(json.loads(json.dumps(record)), 1)
    assert fmt.name == "openai_dpo" and again.example == original


def test_text_round_trips():
    assert to_openai_record(Text("hello")) == {"text": "hello"}


# ------------------------------------------------------------------------------------ iter_records
def records(path):
    items = list(iter_records(path))
    assert all(isinstance(item, Record) for item in items), items
    return [(r.line, r.value) for r in items]


def test_csv_prompt_completion_with_quoted_newline_and_comma(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('prompt,completion\nHi,Hello\n"Line one\nline two, with comma",Done\nLast,One\n', encoding="utf-8")
    assert records(path) == [
        (2, {"prompt": "Hi", "completion": "Hello"}),
        (3, {"prompt": "Line one\nline two, with comma", "completion": "Done"}),
        (5, {"prompt": "Last", "completion": "One"}),
    ]


def test_tsv_is_split_on_tabs(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("prompt\tcompletion\na, b\tc\n", encoding="utf-8")
    assert records(path) == [(2, {"prompt": "a, b", "completion": "c"})]


def test_csv_messages_column_holding_json_is_parsed(tmp_path):
    messages = [{"role": "user", "content": "Q, with comma"}, {"role": "assistant", "content": "A"}]
    cell = json.dumps(messages).replace('"', '""')
    path = tmp_path / "chat.csv"
    path.write_text(f'messages\n"{cell}"\n', encoding="utf-8")
    [(line, value)] = records(path)
    assert line == 2 and value == {"messages": messages}
    assert parse(value, line, expect_format="openai_chat").example.messages[0].content == "Q, with comma"


def test_txt_file_is_split_into_blocks_with_first_line_numbers(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("First doc\nstill first\n\n\nSecond doc\n   \nThird\n", encoding="utf-8")
    assert records(path) == [(1, "First doc\nstill first"), (5, "Second doc"), (7, "Third")]


def test_jsonl_with_utf8_bom_reads_first_record(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"text": "a"}\n{"text": "b"}\n')
    assert records(path) == [(1, {"text": "a"}), (2, {"text": "b"})]


def test_unsupported_suffix_raises_usage_error(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(UsageError, match="unsupported file type '.parquet'"):
        list(iter_records(path))
