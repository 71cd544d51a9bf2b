"""`tuneforge data prepare`: deterministic, verifiable, never loses a record."""

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers import chat, filler, write_jsonl

from tuneforge.data.checks import check_file
from tuneforge.data.prepare import DataHasErrors, PrepareOptions, prepare
from tuneforge.data.split import assign_splits, sha256_file, split_sizes, verify_manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_prepare(source: Path, out: Path, **options) -> dict:
    return prepare(source, out, check_file(source), PrepareOptions(**options)).manifest


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_input_and_seed_give_byte_identical_outputs(tmp_path):
    source = EXAMPLES / "support_chat.jsonl"
    run_prepare(source, tmp_path / "a", seed=7)
    run_prepare(source, tmp_path / "b", seed=7)
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_another_seed_gives_another_split(tmp_path):
    source = EXAMPLES / "support_chat.jsonl"
    run_prepare(source, tmp_path / "a", seed=1)
    run_prepare(source, tmp_path / "b", seed=2)
    assert (tmp_path / "a" / "test.jsonl").read_bytes() != (tmp_path / "b" / "test.jsonl").read_bytes()


def test_manifest_hashes_verify_and_detect_tampering(tmp_path):
    source = EXAMPLES / "support_chat.jsonl"
    manifest = run_prepare(source, tmp_path / "out")
    assert manifest["input"]["sha256"] == sha256_file(source)
    assert verify_manifest(tmp_path / "out") == []
    with (tmp_path / "out" / "validation.jsonl").open("a") as handle:
        handle.write("{}\n")
    assert verify_manifest(tmp_path / "out") == [
        "validation.jsonl: sha256 differs from the manifest (the file changed)"
    ]


def test_splits_partition_the_examples_in_the_asked_proportions(tmp_path):
    manifest = run_prepare(EXAMPLES / "support_chat.jsonl", tmp_path / "out")
    sizes = {name: entry["examples"] for name, entry in manifest["outputs"].items()}
    assert sizes == {"train": 288, "validation": 16, "test": 16}
    lines = [
        line
        for name in ("train", "validation", "test")
        for line in (tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()
    ]
    assert len(lines) == len(set(lines)) == 320


def test_classification_splits_are_stratified_by_label(tmp_path):
    manifest = run_prepare(EXAMPLES / "ticket_classifier.jsonl", tmp_path / "out")
    labels = manifest["labels"]
    for split in ("validation", "test"):
        assert set(labels[split]) == {"billing", "bug", "how_to", "account", "feature_request"}
    counted = Counter(r["messages"][-1]["content"] for r in read_jsonl(tmp_path / "out" / "test.jsonl"))
    assert dict(counted) == labels["test"]


def test_normalises_dedupes_and_converts_to_openai_chat(tmp_path):
    records = [
        {"prompt": f"It\u2019s question {i}\u00a0", "completion": f" \u201cAnswer {i}\u201d"} for i in range(12)
    ]
    records.append(records[0])
    source = write_jsonl(tmp_path / "legacy.jsonl", records)
    manifest = run_prepare(source, tmp_path / "out", ratios=(1.0, 0.0, 0.0))
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert manifest["counts"]["duplicates_removed"] == 1
    assert len(train) == 12
    assert {
        "messages": [{"role": "user", "content": "It's question 0"}, {"role": "assistant", "content": '"Answer 0"'}]
    } in train


def test_no_dedupe_keeps_duplicates(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", filler(12) + filler(1))
    manifest = run_prepare(source, tmp_path / "out", dedupe=False)
    assert manifest["counts"]["examples_out"] == 13


def test_redact_pii_replaces_personal_data_with_typed_placeholders(tmp_path):
    records = filler(12) + [
        chat("Mail jane.roe@example.org or call +44 20 7946 0958", "Card 4111 1111 1111 1111 noted")
    ]
    source = write_jsonl(tmp_path / "pii.jsonl", records)
    manifest = run_prepare(source, tmp_path / "out", redact_pii=True, ratios=(1.0, 0.0, 0.0))
    text = (tmp_path / "out" / "train.jsonl").read_text()
    assert "jane.roe" not in text and "4111" not in text and "7946" not in text
    assert "Mail [EMAIL] or call [PHONE]" in text and "Card [CREDIT_CARD] noted" in text
    assert manifest["counts"]["redactions"] == {"credit_card": 1, "email": 1, "phone": 1}


def test_errors_stop_prepare_and_write_nothing(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", filler(12) + ["{broken"])
    with pytest.raises(DataHasErrors):
        run_prepare(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_drop_invalid_sets_bad_records_aside_with_their_findings(tmp_path):
    bad = {"messages": [{"role": "human", "content": "hi"}]}
    source = write_jsonl(tmp_path / "bad.jsonl", filler(12) + ["{broken", bad])
    manifest = run_prepare(source, tmp_path / "out", drop_invalid=True)
    rejected = read_jsonl(tmp_path / "out" / "rejected.jsonl")
    assert [(r["line"], r["findings"][0]["code"]) for r in rejected] == [(13, "invalid_json"), (14, "unknown_role")]
    assert rejected[1]["record"] == bad
    assert rejected[0]["raw"].strip() == "{broken"  # an unreadable line keeps its text
    assert manifest["counts"]["examples_out"] + manifest["counts"]["invalid_set_aside"] == 14
    assert verify_manifest(tmp_path / "out") == []


def test_dataset_level_errors_stop_even_with_drop_invalid(tmp_path):
    source = write_jsonl(tmp_path / "few.jsonl", filler(5))
    with pytest.raises(DataHasErrors):
        run_prepare(source, tmp_path / "out", drop_invalid=True)


def test_preferences_become_openai_dpo_records(tmp_path):
    source = write_jsonl(
        tmp_path / "prefs.jsonl",
        [{"prompt": f"Q{i}?", "chosen": f"Good {i}", "rejected": f"Bad {i}"} for i in range(12)],
    )
    run_prepare(source, tmp_path / "out", ratios=(1.0, 0.0, 0.0))
    first = read_jsonl(tmp_path / "out" / "train.jsonl")[0]
    assert set(first) == {"input", "preferred_output", "non_preferred_output"}
    assert first["input"]["messages"][0]["role"] == "user"
    assert first["preferred_output"] == [{"role": "assistant", "content": first["preferred_output"][0]["content"]}]


def test_split_sizes_give_each_requested_split_an_example():
    assert split_sizes(20, (0.9, 0.05, 0.05)) == [18, 1, 1]
    assert split_sizes(12, (0.9, 0.05, 0.05)) == [10, 1, 1]
    assert split_sizes(10, (1.0, 0.0, 0.0)) == [10, 0, 0]
    assert sum(split_sizes(1001, (0.8, 0.1, 0.1))) == 1001


def test_adding_an_example_moves_few_others():
    import numpy as np

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, size=1000, dtype=np.uint64)
    before = assign_splits(keys, None, (0.8, 0.1, 0.1))
    after = assign_splits(np.append(keys, np.uint64(12345)), None, (0.8, 0.1, 0.1))[:-1]
    assert (before != after).sum() <= 2
