"""The built-in replay prompts (tuneforge/runs/replay_prompts.jsonl): well formed, diverse, and
disjoint from the evaluation's probe sets, so the forgetting/safety/bias probes keep measuring
general ability rather than memorisation of replayed prompts."""

import json
import re
from importlib.resources import files

import pytest

FIELDS = {"id", "category", "prompt"}
MAX_TRIGRAM_JACCARD = 0.3


def _jsonl(resource) -> list[dict]:
    rows = []
    for n, line in enumerate(resource.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:  # pragma: no cover - the failure message
                pytest.fail(f"{resource.name} line {n} is not valid JSON: {exc}")
    return rows


def _replay() -> list[dict]:
    return _jsonl(files("tuneforge.runs") / "replay_prompts.jsonl")


def _probe_set(name: str) -> list[dict]:
    return _jsonl(files("tuneforge.evaluate") / "probe_sets" / name)


def _probe_prompts() -> list[str]:
    prompts = [row["prompt"] for row in _probe_set("forgetting.jsonl")]
    prompts += [row["prompt"] for row in _probe_set("red_team.jsonl")]
    for row in _probe_set("bias_pairs.jsonl"):
        prompts += [row["template"].replace("{term}", term) for term in row["terms"]]
    return prompts


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"\d+(?:\.\d+)?", text))


def _jaccard(a: str, b: str) -> float:
    ta, tb = _trigrams(a), _trigrams(b)
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)


def test_replay_prompts_are_well_formed_and_diverse():
    rows = _replay()
    assert len(rows) >= 400
    for row in rows:
        assert isinstance(row, dict) and set(row) == FIELDS, row
        for field in FIELDS:
            assert isinstance(row[field], str) and row[field].strip(), (field, row)
    ids = [row["id"] for row in rows]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    prompts = [row["prompt"].strip().lower() for row in rows]
    assert len(prompts) == len(set(prompts)), "duplicate prompts"
    categories = {row["category"] for row in rows}
    assert len(categories) >= 8, categories
    assert sum(row["category"] == "refusal" for row in rows) >= 30


def test_probe_sets_load_and_trigram_overlap_detects_a_copy():
    probes = _probe_prompts()
    # 24 forgetting + 20 red-team + 12 bias templates x 2 terms, as the probe sets ship today.
    assert len(probes) >= 40
    assert all(_trigrams(p) for p in probes)
    assert _jaccard(probes[0], probes[0]) == 1.0


def test_replay_prompts_do_not_overlap_the_probe_sets():
    probes = _probe_prompts()
    references = [row["reference"] for row in _probe_set("forgetting.jsonl")]
    overlaps = []
    for row in _replay():
        prompt = row["prompt"]
        for probe in probes:
            score = _jaccard(prompt, probe)
            if score >= MAX_TRIGRAM_JACCARD:
                overlaps.append(f"{row['id']}: {score:.2f} with probe {probe!r}")
        for reference in references:
            if reference.lower() in prompt.lower():
                overlaps.append(f"{row['id']}: contains reference {reference!r}")
    assert not overlaps, "\n".join(overlaps)


def test_replay_prompts_do_not_reuse_the_numbers_of_a_forgetting_probe():
    """A reworded sum ("Add 25 and 17") shares no trigram with "What is 17 + 25?"; the numbers give it away."""
    probe_numbers = [
        (row["prompt"], _numbers(row["prompt"]))
        for row in _probe_set("forgetting.jsonl")
        if len(_numbers(row["prompt"])) >= 2
    ]
    assert probe_numbers
    reused = [
        f"{row['id']}: uses the numbers of {prompt!r}"
        for row in _replay()
        for prompt, numbers in probe_numbers
        if numbers <= _numbers(row["prompt"])
    ]
    assert not reused, "\n".join(reused)
