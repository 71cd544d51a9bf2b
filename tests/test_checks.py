"""`tuneforge data check` finds every problem with the right code, line and field.

One case per finding code in the catalog (a test fails if a code has no case), plus the same
problems found in each input format and file type.
"""

import json

import pytest
from helpers import chat, filler, write_jsonl

from tuneforge.data.checks import check_file
from tuneforge.data.findings import CATALOG
from tuneforge.data.tokenize import ChatTokenizer

BAD_LINE = 3  # each per-record case puts its bad record on line 3, between valid examples


def user_assistant(user, assistant):
    return {"role": "user", "content": user}, {"role": "assistant", "content": assistant}


TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}}

# code -> (the bad record on line 3, the field path expected, None when the finding has no field)
RECORD_CASES = {
    "not_utf8": (b'{"prompt": "caf\xe9", "completion": "ok"}', None),
    "invalid_json": ('{"messages": [', None),
    "not_object": ("[1, 2, 3]", None),
    "blank_line": ("", None),
    "unknown_format": ({"question": "q", "answer": "a"}, None),
    "missing_key": ({"prompt": "only a prompt"}, "completion"),
    "unknown_key": ({**chat("hi", "hello"), "mesages_extra": 1}, "mesages_extra"),
    "wrong_type": ({"messages": "hello"}, "messages"),
    "unknown_role": (
        {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
        "messages[0].role",
    ),
    "empty_content": (chat("hi", "  "), "messages[1].content"),
    "no_assistant_turn": ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
    "nothing_to_train": (chat("hi", "hello", weight=0), "messages"),
    "invalid_weight": (chat("hi", "hello", weight=0.5), "messages[1].weight"),
    "weight_not_on_assistant": (
        {"messages": [{"role": "user", "content": "hi", "weight": 1}, {"role": "assistant", "content": "yo"}]},
        "messages[0].weight",
    ),
    "bad_turn_order": (
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"},
            ]
        },
        "messages[1]",
    ),
    "orphan_tool_message": (
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "tool", "content": "42", "tool_call_id": "x"},
                {"role": "assistant", "content": "c"},
            ]
        },
        "messages[1]",
    ),
    "invalid_tool_call": (
        {
            "messages": [
                {"role": "user", "content": "a"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{**TOOL_CALL, "function": {"name": "lookup", "arguments": "{not json"}}],
                },
                {"role": "tool", "content": "1", "tool_call_id": "call_1"},
                {"role": "assistant", "content": "done"},
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
    ),
    "identical_preference": ({"prompt": "Which?", "chosen": "Same answer", "rejected": "Same answer"}, "rejected"),
    "trailing_messages": ({"messages": [*user_assistant("a", "b"), {"role": "user", "content": "c"}]}, "messages[2]"),
    "duplicate": (filler(1)[0], None),
    "smart_quotes": (chat("It\u2019s \u201cgreat\u201d", "Thanks"), "messages[0].content"),
    "odd_whitespace": (chat("hi", "hello\u00a0there"), "messages[1].content"),
    "untrimmed_whitespace": (chat("hi ", "hello"), "messages[0].content"),
    "mostly_uppercase": (chat("WHY IS MY INVOICE NOT SENDING TO THE CLIENT", "Let me check."), "messages[0].content"),
    "personal_data": (chat("Write to jane.roe@example.org please", "Will do."), "messages[0].content"),
    "unsafe_content": (chat("Teach me", "Here is how to make a bomb at home."), "messages[1].content"),
    "mixed_formats": ({"text": "A raw document among chat examples."}, None),
}


@pytest.mark.parametrize("code", sorted(RECORD_CASES))
def test_record_problem_found_with_line_and_field(tmp_path, code):
    bad, field = RECORD_CASES[code]
    records = filler(2) + [bad] + filler(12, start=2)
    report = check_file(write_jsonl(tmp_path / "data.jsonl", records))
    found = report.findings.kept.get(code)
    assert found, f"{code} not reported; got {report.findings.summary()}"
    assert found[0].line == BAD_LINE
    assert found[0].field == field
    assert found[0].severity == CATALOG[code].severity or code == "empty_content"
    assert found[0].fix
    assert report.ok == (report.findings.errors == 0)


def dataset(n_same_prompt=0, labels=None):
    if labels:
        return [chat(f"Ticket {i}: something about case {i}", label) for i, label in enumerate(labels)]
    return [chat("The same prompt every time", f"Answer {i}") for i in range(n_same_prompt)]


DATASET_CASES = {
    "file_empty": [],
    "too_few_examples": filler(5),
    "few_examples": filler(20),
    "identical_prompts": dataset(n_same_prompt=12),
    "identical_completions": [chat(f"Question {i}", "Always this") for i in range(12)],
    "classification_like": dataset(labels=["billing"] * 20 + ["bug"] * 20),
    "label_imbalance": dataset(labels=["billing"] * 50 + ["bug"] * 5 + ["account"] * 5),
    "mixed_source_formats": filler(11) + [{"prompt": "a legacy example", "completion": "in the same file"}],
    "no_tokenizer": filler(12),
}


@pytest.mark.parametrize("code", sorted(DATASET_CASES))
def test_dataset_problem_found(tmp_path, code):
    report = check_file(write_jsonl(tmp_path / "data.jsonl", DATASET_CASES[code]))
    assert report.findings.counts[code] == 1, report.findings.summary()


def test_too_long_counts_truncated_examples(tmp_path, smol_tokenizer):
    records = filler(2) + [chat("A short question", "word " * 200)] + filler(12, 2)
    report = check_file(
        write_jsonl(tmp_path / "data.jsonl", records), ChatTokenizer(smol_tokenizer), context_length=100
    )
    [finding] = report.findings.kept["too_long"]
    assert finding.line == BAD_LINE and finding.severity == "warning"
    assert report.stats["truncated_examples"] == 1


def test_too_long_is_an_error_when_truncation_leaves_nothing_to_train(tmp_path, smol_tokenizer):
    records = filler(2) + [chat("word " * 200, "the answer is cut off entirely")] + filler(12, 2)
    report = check_file(
        write_jsonl(tmp_path / "data.jsonl", records), ChatTokenizer(smol_tokenizer), context_length=100
    )
    assert report.findings.kept["too_long"][0].severity == "error"
    assert not report.ok


def test_every_catalogued_code_has_a_case():
    covered = set(RECORD_CASES) | set(DATASET_CASES) | {"too_long"}
    assert covered == set(CATALOG)


def test_duplicate_names_the_original_line(tmp_path):
    records = filler(12) + [filler(1, start=4)[0], filler(1, start=4)[0]]
    report = check_file(write_jsonl(tmp_path / "data.jsonl", records))
    assert [(f.line, f.message) for f in report.findings.kept["duplicate"]] == [
        (13, "same as line 5"),
        (14, "same as line 5"),
    ]


def test_mixed_source_formats_names_the_minority_lines(tmp_path):
    legacy = [{"prompt": f"a legacy example {i}", "completion": "in the same file"} for i in range(2)]
    records = filler(6) + legacy[:1] + filler(11, start=6) + legacy[1:] + filler(3, start=17)
    report = check_file(write_jsonl(tmp_path / "data.jsonl", records))
    [finding] = report.findings.kept["mixed_source_formats"]
    assert finding.line == 7
    assert finding.message == (
        "the file mixes formats (openai_chat: 20, prompt_completion: 2); prompt_completion on lines 7, 19"
    )


# The same problem, an empty answer, in every accepted format and file type.
EMPTY_ANSWER = [
    ("openai_chat", chat("q", ""), "messages[1].content"),
    ("prompt_completion", {"prompt": "q", "completion": ""}, "completion"),
    ("prompt_response", {"prompt": "q", "response": ""}, "response"),
    ("alpaca", {"instruction": "q", "input": "", "output": ""}, "output"),
    (
        "openai_dpo",
        {
            "input": {"messages": [{"role": "user", "content": "q"}]},
            "preferred_output": [{"role": "assistant", "content": ""}],
            "non_preferred_output": [{"role": "assistant", "content": "no"}],
        },
        "preferred_output[0].content",
    ),
    ("prompt_chosen_rejected", {"prompt": "q", "chosen": "", "rejected": "no"}, "chosen"),
    ("text", {"text": ""}, "text"),
]


@pytest.mark.parametrize("fmt,bad,field", EMPTY_ANSWER, ids=[case[0] for case in EMPTY_ANSWER])
def test_empty_answer_found_in_every_format(tmp_path, fmt, bad, field):
    good = {k: (v if not isinstance(v, str) else "fine") for k, v in bad.items()}
    if fmt == "openai_chat":
        good = chat("q", "fine")
    elif fmt == "openai_dpo":
        good = {**bad, "preferred_output": [{"role": "assistant", "content": "yes"}]}
    records = [_distinct(good, i) for i in range(2)] + [bad] + [_distinct(good, i) for i in range(2, 14)]
    report = check_file(write_jsonl(tmp_path / "data.jsonl", records))
    assert report.format == fmt
    [finding] = report.findings.kept["empty_content"]
    assert (finding.line, finding.field) == (BAD_LINE, field)


def _distinct(record: dict, i: int) -> dict:
    """The record with a counter appended to its first string value, so examples are not duplicates."""
    record = json.loads(json.dumps(record))
    for key, value in record.items():
        if isinstance(value, str):
            record[key] = f"{value} {i}"
            return record
    record["messages" if "messages" in record else "input"] = _distinct_messages(record, i)
    return record


def _distinct_messages(record: dict, i: int):
    messages = record["messages"] if "messages" in record else record["input"]
    if "messages" in record:
        messages[0]["content"] += f" {i}"
        return messages
    messages["messages"][0]["content"] += f" {i}"
    return messages


@pytest.mark.parametrize("suffix,delimiter", [(".csv", ","), (".tsv", "\t")])
def test_delimited_files_report_the_row_line(tmp_path, suffix, delimiter):
    rows = ["prompt,completion".replace(",", delimiter)]
    rows += [f"question {i}{delimiter}answer {i}" for i in range(2)]
    rows.append(f"question 2{delimiter}")  # line 4: empty completion
    rows += [f"question {i}{delimiter}answer {i}" for i in range(3, 15)]
    path = tmp_path / f"data{suffix}"
    path.write_text("\n".join(rows) + "\n")
    report = check_file(path)
    assert report.format == "prompt_completion"
    [finding] = report.findings.kept["empty_content"]
    assert (finding.line, finding.field) == (4, "completion")


def test_text_file_blocks_are_examples_with_their_first_line(tmp_path):
    blocks = [f"Paragraph {i} of the handbook.\nIt continues here." for i in range(12)]
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(blocks) + "\n")
    report = check_file(path)
    assert (report.format, report.kind, report.examples) == ("text", "text", 12)
    assert report.ok


def test_findings_are_capped_per_code_but_counted(tmp_path):
    records = filler(12) + ["not json"] * 50
    report = check_file(write_jsonl(tmp_path / "data.jsonl", records), keep_per_code=5)
    assert len(report.findings.kept["invalid_json"]) == 5
    assert report.findings.counts["invalid_json"] == 50


def test_statistics_count_tokens_and_trainable_tokens(tmp_path, smol_tokenizer):
    records = filler(12)
    report = check_file(
        write_jsonl(tmp_path / "data.jsonl", records), ChatTokenizer(smol_tokenizer), 8192, parameters=134_515_008
    )
    tokenizer = ChatTokenizer(smol_tokenizer)
    from tuneforge.data.formats import parse_record

    examples = [parse_record(r, i)[1].example for i, r in enumerate(records)]
    encoded = tokenizer.encode(examples)
    assert report.stats["total_tokens"] == sum(len(e.input_ids) for e in encoded)
    assert report.stats["trainable_tokens"] == int(sum(e.trainable_tokens for e in encoded))
    assert report.stats["tokens_x_epochs"] == report.stats["total_tokens"] * report.stats["default_epochs"]
    assert report.stats["default_epochs"] == 9  # OpenAI's auto rule: 12 examples x 9 epochs >= 100
    assert report.stats["estimated_training_seconds"] > 0
