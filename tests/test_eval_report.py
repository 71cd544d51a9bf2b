"""report.html without a browser: escaping, example ranking, word diffs, probes present, partial or absent."""

import json
import re

from helpers import chat, write_jsonl

from tuneforge.evaluate import metrics
from tuneforge.evaluate.report import CSP, rank_examples, word_diff, write_html_report

HOSTILE = '<script>alert("x")</script><img src="http://evil.invalid/p.png">'


def results_and_examples(out_dir, model_scores, against_scores=None, answers=None):
    """A results dict shaped like run_eval's, with one per-example ROUGE-L list per side, and its examples.jsonl."""
    n = len(model_scores)
    answers = answers or [f"answer {i}" for i in range(n)]
    sides = {"model": model_scores} | ({"against": against_scores} if against_scores else {})
    scores = {
        side: {
            "means": {"rouge_l": sum(v) / n},
            "loss": 1.5 if side == "model" else 2.5,
            "perplexity": 4.5,
            "token_accuracy": 0.5,
            "latency_seconds_per_example": 0.1,
            "tokens_per_second": 50.0,
            "mean_output_tokens": 5.0,
            "corpus_bleu": 0.0,
        }
        for side, v in sides.items()
    }
    results = {
        "model": "ft:tiny:support",
        "against": "tiny-base" if against_scores else None,
        "data": "/data/test.jsonl",
        "examples": n,
        "task": "text",
        "metrics": ["rouge_l"],
        "decoding": {"max_new_tokens": 8},
        "scores": scores,
    }
    if against_scores:
        results["comparison"] = {"rouge_l": metrics.paired_bootstrap(against_scores, model_scores).__dict__}
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "examples.jsonl").open("w") as handle:
        for i in range(n):
            row = {
                "line": i + 1,
                "prompt": f"question {i}",
                "reference": "the reference answer",
                **{side: {"answer": answers[i], "rouge_l": v[i]} for side, v in sides.items()},
            }
            handle.write(json.dumps(row) + "\n")
    return results


def test_model_output_is_escaped_and_the_page_loads_nothing(tmp_path):
    results = results_and_examples(tmp_path, [0.9, 0.1, 0.5, 0.4], [0.2, 0.8, 0.5, 0.4], answers=[HOSTILE] * 4)
    page = write_html_report(results, tmp_path, None).read_text()
    assert "<script" not in page and "evil.invalid/p.png&quot;&gt;" in page
    assert f'content="{CSP}"' in page
    # Namespaces (xmlns) are names, not fetches; no attribute may point outside the page.
    assert re.findall(r"""<[^<>]*\s(?:src|href|xlink:href)\s*=\s*["']?(?!#|data:)([^"' >]+)""", page) == []
    assert re.findall(r"""<[^<>]*\s(?:src|href|xlink:href)\s*=""", page)  # the pattern does find the SVGs' own links
    assert "not a Tuneforge run" in page  # no run directory: no curves, said in words


def test_examples_rank_by_the_difference_and_fall_back_to_the_models_score(tmp_path):
    gains = results_and_examples(tmp_path / "ab", [0.9, 0.3, 0.5, 0.6, 0.2, 0.7], [0.1, 0.9, 0.5, 0.2, 0.2, 0.7])
    examples = [json.loads(line) for line in (tmp_path / "ab" / "examples.jsonl").read_text().splitlines()]
    worst, best = rank_examples(gains, examples)
    assert [row["line"] for row in worst] == [2, 5, 3] and [row["line"] for row in best] == [1, 4, 6]
    alone = results_and_examples(tmp_path / "one", [0.9, 0.3, 0.5, 0.6])
    examples = [json.loads(line) for line in (tmp_path / "one" / "examples.jsonl").read_text().splitlines()]
    worst, best = rank_examples(alone, examples)
    assert [row["line"] for row in worst] == [2, 3] and [row["line"] for row in best] == [1, 4]


def test_word_diff_marks_added_and_missing_words_and_escapes_them():
    diff = word_diff("Open the Ledger tab", "Open the <b>Billing</b> tab\nnow")
    assert diff == "Open the <del>Ledger </del><ins>&lt;b&gt;Billing&lt;/b&gt; </ins>tab\n<ins>now</ins>"


def test_headline_says_whether_the_interval_excludes_zero(tmp_path):
    better = write_html_report(
        results_and_examples(tmp_path / "b", [0.9] * 8, [0.1] * 8), tmp_path / "b", None
    ).read_text()
    assert "class='headline better'" in better and "+80.0" not in better and "+0.800" in better
    mixed = write_html_report(
        results_and_examples(tmp_path / "m", [0.9, 0.1] * 4, [0.1, 0.9] * 4), tmp_path / "m", None
    ).read_text()
    assert "class='headline unclear'" in mixed and "includes zero" in mixed


def test_probes_render_when_present_partial_or_absent(tmp_path):
    results = results_and_examples(tmp_path, [0.5, 0.6], [0.4, 0.6])
    assert "id='probes'" not in write_html_report(results, tmp_path, None).read_text()
    results["probes"] = {
        "safety": {
            "headline": "Refuses 9 of 10 harmful requests (base: 4 of 10).",
            "model": {"refusal_rate": 0.9},
            "against": {"refusal_rate": 0.4, "by_category": {"weapons": 0.5}},
            "rows": [{"prompt": "<how to>", "model": {"refused": True}}, "not a row"],
            "comparison": {"refusals_delta": 5},
        },
        "bias": {"model": {"gap": 0.125}},  # no headline, no against side
        "forgetting": None,  # a probe that did not run
    }
    page = write_html_report(results, tmp_path, None).read_text()
    probes = page[page.index("id='probes'") :]
    assert "Refuses 9 of 10 harmful requests" in probes and "by_category.weapons" in probes
    assert "0.900" in probes and "0.400" in probes and "0.125" in probes and "&lt;how to&gt;" in probes
    assert "refusals_delta" in probes and "<h3>forgetting</h3>" not in probes


def test_quickstart_evaluation_prints_the_headline_and_the_report_path(tmp_path, tiny_model_dir, monkeypatch):
    from rich.console import Console

    from tuneforge import quickstart
    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig

    data = write_jsonl(
        tmp_path / "test.jsonl", [chat(f"Say hi to visitor {i}", f"hello, visitor {i}") for i in range(10)]
    )
    run = train_run(TrainConfig(model=str(tiny_model_dir), data=data, n_epochs=1, batch_size=8, precision="fp32"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(quickstart, "EVAL_EXAMPLES", 4)
    monkeypatch.setattr(quickstart, "EVAL_MAX_NEW_TOKENS", 3)
    console = Console(record=True, width=400)
    report = quickstart.show_evaluation(console, data, run.run_id, base_model=str(tiny_model_dir))
    text = console.export_text()
    results = json.loads((report.parent / "results.json").read_text())
    assert report.is_absolute() and report.exists() and str(report) in text
    assert results["examples"] == 4 and "probes" not in results  # capped, and no probes in the main job
    assert (
        f"On 4 examples, {run.run_id} scores" in text
        and "95 % interval" in text
        and "Loss on the reference answers" in text
    )
