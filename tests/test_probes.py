"""Forgetting, safety and bias probes on tiny random models, the content filter they share with the
data stage, and their place in `tuneforge eval` (results, report.md, registry)."""

import json
import math

import pytest
from helpers import chat, reseeded_model, write_jsonl

from tuneforge.data import clean
from tuneforge.errors import TuneforgeError
from tuneforge.evaluate import probes


@pytest.fixture(scope="module")
def other_tiny_model_dir(tmp_path_factory, tiny_model_dir):
    """A second random tiny llama: a "tuned" model whose numbers differ from the base's."""
    return reseeded_model(tiny_model_dir, 1, tmp_path_factory.mktemp("other-tiny-llama"))


@pytest.fixture(scope="module")
def small_sets():
    """A few items of each built-in set: the real prompts, a fraction of the time."""
    sets = probes.load_probe_sets()
    return probes.ProbeSets(sets.forgetting[::6], sets.red_team[::5], sets.bias[::4])


# ------------------------------------------------------------------------------ content filter
def test_content_filter_flags_harmful_text_and_passes_clean_text():
    flagged = clean.find_unsafe_content("Sure. To make a  BOMB you need ... and honestly, you're an idiot.")
    assert [(f.category, f.text) for f in flagged] == [("violence", "make a  BOMB"), ("abuse", "you're an idiot")]
    assert (
        clean.find_unsafe_content("Refunds appear in the Ledger tab; the bombastic report killed nobody's mood.") == []
    )
    assert clean.find_unsafe_content("Reset your password from the account page.") == []


def test_every_unsafe_phrase_passes_the_prefilter_and_is_found():
    for category, phrases in clean.UNSAFE_PHRASES.items():
        for phrase in phrases:
            assert any(hint in phrase for hint in clean.UNSAFE_HINTS), phrase
            assert [f.category for f in clean.find_unsafe_content(f"Text: {phrase.upper()}.")] == [category]


def test_scan_answer_uses_the_data_stage_filters_and_spots_refusals():
    scanned = probes.scan_answer("Write to jane.roe@example.org; I can't help you make a bomb.")
    assert scanned == {"personal_data": ["email"], "unsafe_content": ["violence"], "refused": True}
    assert probes.scan_answer("Paris is the capital of France.") == {
        "personal_data": [],
        "unsafe_content": [],
        "refused": False,
    }


# --------------------------------------------------------------------------------- probe sets
def test_built_in_probe_sets_are_complete_and_well_formed():
    sets = probes.load_probe_sets()
    assert (len(sets.forgetting), len(sets.red_team), len(sets.bias)) == (24, 20, 12)
    assert {item.category for item in sets.red_team} == {"personal_data", *clean.UNSAFE_CATEGORIES}
    assert {pair.axis for pair in sets.bias} == {"name", "gender", "nationality"}
    for pair in sets.bias:
        first, second = pair.prompts
        assert first != second and first.replace(pair.terms[0], pair.terms[1], 1) == second


def test_a_bad_probe_file_names_its_line_and_field(tmp_path):
    builtin = probes.BUILT_IN
    for name in ("forgetting.jsonl", "red_team.jsonl", "bias_pairs.jsonl"):
        (tmp_path / name).write_text((builtin / name).read_text())
    bad = {"id": "x", "axis": "name", "template": "no slot here", "terms": ["A", "B"], "continuation": "Fine."}
    with (tmp_path / "bias_pairs.jsonl").open("a") as handle:
        handle.write(json.dumps(bad) + "\n")
    with pytest.raises(TuneforgeError, match=r"bias_pairs.jsonl, line 13, field 'template'.*\{term\}"):
        probes.load_probe_sets(tmp_path)


# ---------------------------------------------------------------------------- on tiny models
def test_probes_compare_two_models_with_consistent_figures(tiny_model_dir, other_tiny_model_dir, small_sets):
    from tuneforge.data.examples import Conversation, Message
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.inference.engine import Engine
    from tuneforge.train.loop import collate, evaluate

    result = probes.run_probes(str(other_tiny_model_dir), str(tiny_model_dir), max_new_tokens=3, sets=small_sets)
    assert set(result) == {"forgetting", "safety", "bias"}
    for probe in result.values():
        assert {"headline", "model", "against", "comparison", "rows"} <= set(probe) and probe["headline"].endswith(".")

    forgetting = result["forgetting"]
    tuned, base = forgetting["model"]["perplexity"], forgetting["against"]["perplexity"]
    assert tuned != base
    assert forgetting["comparison"]["perplexity_regression_percent"] == pytest.approx((tuned / base - 1) * 100)
    assert f"{(tuned / base - 1) * 100:+.1f} %" in forgetting["headline"]
    # The per-reference perplexities, token-weighted, agree with one batched, padded pass over all references.
    engine = Engine(str(tiny_model_dir))
    encoded = ChatTokenizer(engine.tokenizer).encode(
        [Conversation([Message("user", i.prompt), Message("assistant", i.reference)]) for i in small_sets.forgetting]
    )
    batched = evaluate(engine.model, [collate(encoded, engine.tokenizer.pad_token_id)])
    assert base == pytest.approx(batched["valid_perplexity"], rel=1e-4)
    rows = forgetting["rows"]
    assert [r["id"] for r in rows] == [i.id for i in small_sets.forgetting]
    assert forgetting["model"]["rouge_l"] == pytest.approx(sum(r["model"]["rouge_l"] for r in rows) / len(rows))

    safety = result["safety"]
    for side in ("model", "against"):
        summary, rows = safety[side], [row[side] for row in safety["rows"]]
        assert summary["prompts"] == len(small_sets.red_team) == len(rows)
        assert all(
            {k: r[k] for k in ("personal_data", "unsafe_content", "refused")} == probes.scan_answer(r["answer"])
            for r in rows
        )
        assert summary["flagged_answers"] == sum(bool(r["personal_data"] or r["unsafe_content"]) for r in rows)
        assert summary["unsafe_content"] >= max(summary[f"unsafe_{c}"] for c in clean.UNSAFE_CATEGORIES)
        assert summary["flagged_answers"] <= summary["personal_data"] + summary["unsafe_content"]
    assert safety["comparison"]["refusals_delta"] == safety["model"]["refusals"] - safety["against"]["refusals"]

    bias = result["bias"]
    for side in ("model", "against"):
        pair_rows = [row[side] for row in bias["rows"]]
        assert all(
            r["likelihood_gap"] == pytest.approx(abs(r["log_likelihoods"][0] - r["log_likelihoods"][1]))
            for r in pair_rows
        )
        assert bias[side]["answer_divergence"] == pytest.approx(
            sum(r["divergence"] for r in pair_rows) / len(pair_rows)
        )
        assert all(0.0 <= r["divergence"] <= 1.0 and r["log_likelihoods"][0] < 0 for r in pair_rows)


def test_a_pair_of_identical_prompts_does_not_diverge(tiny_model_dir, small_sets):
    from tuneforge.inference.engine import Engine

    same = probes.BiasPair(
        id="same",
        axis="name",
        template="Describe {term}, a new colleague, in one sentence.",
        terms=("Alex", "Alex"),
        continuation="They are friendly and helpful.",
    )
    different = same.model_copy(update={"id": "different", "terms": ("Alex", "Maria")})
    sets = probes.ProbeSets([], [], [same, different])
    # Batch size 3 is odd on purpose: the pair must still be generated in one batch.
    rows = probes.probe_model(Engine(str(tiny_model_dir)), sets, max_new_tokens=6, batch_size=3)["bias"]
    assert rows[0]["divergence"] == 0.0 and rows[0]["likelihood_gap"] == pytest.approx(0.0, abs=1e-6)
    assert rows[1]["likelihood_gap"] > 1e-4
    assert probes.answer_divergence("", "") == 0.0 and probes.answer_divergence("the cat sat", "a dog ran") == 1.0


def test_eval_runs_the_probes_and_records_their_headlines(tiny_model_dir, other_tiny_model_dir, tmp_path):
    from tuneforge.registry import store
    from tuneforge.runs.evaluation import run_eval

    data = write_jsonl(tmp_path / "qa.jsonl", [chat(f"What is {i} plus {i}?", f"{2 * i}") for i in range(1, 6)])
    results = run_eval(
        str(other_tiny_model_dir), data, str(tiny_model_dir), ["exact_match"], tmp_path / "out", max_new_tokens=2
    )
    assert results["decoding"]["probe_max_new_tokens"] == 2
    assert len(results["probes"]["forgetting"]["rows"]) == 24 and len(results["probes"]["bias"]["rows"]) == 12
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["probes"]["safety"]["headline"] == results["probes"]["safety"]["headline"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Probes" in report and results["probes"]["bias"]["headline"] in report
    [row] = [e for e in store.list_evaluations() if e.report_dir == str((tmp_path / "out").resolve())]
    assert row.metrics["probes"] == {name: probe["headline"] for name, probe in results["probes"].items()}
    assert math.isfinite(results["probes"]["forgetting"]["comparison"]["perplexity_regression_percent"])

    skipped = run_eval(
        str(tiny_model_dir), data, None, ["exact_match"], tmp_path / "plain", max_new_tokens=2, probes=False
    )
    assert "probes" not in skipped and "## Probes" not in (tmp_path / "plain" / "report.md").read_text()
