"""`report.html`: one evaluation on one self-contained page that opens offline (written by `tuneforge eval`).

Headline in words, training curves of the run, the metric table, A/B bars with bootstrap intervals,
the worst and best examples with word-level diffs against the reference, and the probes when the
evaluation ran any. Charts are matplotlib SVG inlined into the page; a Content-Security-Policy forbids
every fetch, so the page cannot phone home even though it shows model output (escaped throughout).
"""

import difflib
import html
import io
import json
import re
import tempfile
from pathlib import Path

# The page may load nothing at all: inline <style> and inline SVG need no fetch, data: images are
# the only images allowed, and scripts are not allowed.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
RATES = {"accuracy", "exact_match", "normalized_exact_match", "json_valid"}  # shown as percentages
METRIC_LABELS = {
    "accuracy": "accuracy",
    "exact_match": "exact match",
    "normalized_exact_match": "exact match (normalised)",
    "json_valid": "valid JSON",
    "rouge_l": "ROUGE-L (0-1)",
    "bleu": "BLEU (0-100)",
    "macro_f1": "macro-F1",
    "corpus_bleu": "corpus BLEU",
    "loss": "loss on the references",
    "perplexity": "perplexity",
    "token_accuracy": "token accuracy",
    "latency_seconds_per_example": "latency (s per example)",
    "tokens_per_second": "generation speed (tokens/s)",
    "mean_output_tokens": "answer length (tokens)",
}
LOWER_IS_BETTER = {"loss", "perplexity", "latency_seconds_per_example"}
AGAINST_COLOUR, MODEL_COLOUR = "#9AA5B1", "#4C72B0"
SHOWN_EXAMPLES = 3  # worst and best, each
MAX_PROBE_ROWS = 50
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:24px;
 color:#1f2933;line-height:1.45;background:#fff}
h1{font-size:1.6em;margin:0 0 4px;overflow-wrap:anywhere}
h2{border-bottom:2px solid #e4e7eb;padding-bottom:4px;margin-top:36px}
.meta{color:#52606d}.headline{font-size:1.15em;background:#f5f7fa;border-left:6px solid #9AA5B1;padding:12px 16px}
.headline.better{border-color:#2e7d32}.headline.worse{border-color:#c62828}
table{border-collapse:collapse;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f5f7fa}
span.better{color:#2e7d32;font-weight:600}span.worse{color:#c62828;font-weight:600}
svg{max-width:100%;height:auto}
.example{border:1px solid #e4e7eb;border-radius:6px;padding:10px 14px;margin:12px 0}
.sides{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:12px}
.text{white-space:pre-wrap;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;background:#f5f7fa;
 padding:6px 8px;border-radius:4px;overflow-wrap:anywhere}
ins{background:#d4f4dd;text-decoration:none}del{background:#fbd5d5;color:#8a1c1c}del+ins{margin-left:.3em}
.wide{overflow-x:auto}.rows td{text-align:left;vertical-align:top;font-size:.85em}summary{cursor:pointer;color:#52606d}
.label{font-weight:600;color:#52606d;font-size:.9em;margin:8px 0 4px}
"""


def write_html_report(results: dict, out_dir: Path, run_dir: Path | None) -> Path:
    """Write `out_dir/report.html` from run_eval's results (and its `examples.jsonl`, when present)."""
    examples_file = out_dir / "examples.jsonl"
    examples = (
        [json.loads(line) for line in examples_file.read_text(encoding="utf-8").splitlines()]
        if examples_file.exists()
        else []
    )
    sections = [
        _headline(results),
        _training(run_dir),
        _metric_table(results),
        _ab_bars(results),
        _confusion(results),
        _examples(results, examples),
        _probes(results.get("probes"), results),
    ]
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>Evaluation of {_e(results['model'])}</title><style>{STYLE}</style></head><body>"
        + "".join(s for s in sections if s)
        + "</body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")  # the page declares utf-8, whatever the locale
    return path


def _e(value) -> str:
    return html.escape(str(value))


def _value(metric: str, value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—" if value is None else _e(value)
    if isinstance(value, int):
        return f"{value:,}"
    if metric in RATES:
        return f"{100 * value:.1f} %"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3f}"


def _delta(metric: str, value: float) -> str:
    if metric in RATES:
        return f"{100 * value:+.1f} points"
    return f"{value:+,.1f}" if abs(value) >= 100 else f"{value:+.3f}"


def _verdict(comparison: dict) -> str:
    """'better' / 'worse' when the whole 95 % interval of the delta is on one side of zero."""
    if comparison["ci_low"] > 0:
        return "better"
    return "worse" if comparison["ci_high"] < 0 else "unclear"


def headline(results: dict) -> tuple[str, list[str]]:
    """(verdict, plain-text sentences): the main metric's change with its interval in words, then the loss.
    The page shows them escaped; the quickstart prints them."""
    model, against, scores = results["model"], results["against"], results["scores"]
    main = results["metrics"][0]
    label = METRIC_LABELS.get(main, main)
    if not against:
        return "unclear", [
            f"{model} scores {_value(main, scores['model']['means'][main])} {label} on "
            f"{results['examples']} examples (no comparison model)."
        ]
    c = results["comparison"][main]
    verdict = _verdict(c)
    meaning = {
        "better": "the tuned model is better: the whole 95 % interval is above zero, so the gain is unlikely "
        "to be luck of this sample",
        "worse": "the tuned model is worse: the whole 95 % interval is below zero",
        "unclear": "no clear difference: the 95 % interval includes zero, so these examples cannot tell the two apart",
    }[verdict]
    sentence = (
        f"On {results['examples']} examples, {model} scores {_value(main, c['mean_b'])} {label} against "
        f"{_value(main, c['mean_a'])} for {against}: {_delta(main, c['delta'])} (95 % interval "
        f"{_delta(main, c['ci_low'])} to {_delta(main, c['ci_high'])}), {meaning}."
    )
    loss = (
        f"Loss on the reference answers goes from {_value('loss', scores['against']['loss'])} to "
        f"{_value('loss', scores['model']['loss'])} (perplexity "
        f"{_value('perplexity', scores['against']['perplexity'])} "
        f"→ {_value('perplexity', scores['model']['perplexity'])}; lower means the model finds the references more "
        f"likely)."
    )
    return verdict, [sentence, loss]


def _headline(results: dict) -> str:
    meta = (
        f"<p class='meta'>Data <code>{_e(results['data'])}</code>: {results['examples']} examples, task "
        f"<b>{_e(results['task'])}</b>; greedy decoding, at most {results['decoding']['max_new_tokens']} new "
        f"tokens.</p>"
    )
    title = (
        f"<h1>Evaluation of {_e(results['model'])}"
        + (f" against {_e(results['against'])}" if results["against"] else "")
        + "</h1>"
    )
    verdict, sentences = headline(results)
    rest = "".join(f"<p>{_e(sentence)}</p>" for sentence in sentences[1:])
    return f"<section id='headline'>{title}{meta}<p class='headline {verdict}'>{_e(sentences[0])}</p>{rest}</section>"


def _training(run_dir: Path | None) -> str:
    from tuneforge.train.report import plot_loss, read_metrics

    heading = "<section id='training'><h2>Training curves</h2>"
    metrics_csv = run_dir / "metrics.csv" if run_dir else None
    if metrics_csv is None or not metrics_csv.exists():
        return (
            heading
            + "<p class='meta'>The evaluated model is not a Tuneforge run, so there are no training curves.</p>"
            + "</section>"
        )
    train, valid = read_metrics(metrics_csv)
    if not train and not valid:
        return heading + f"<p class='meta'>{_e(metrics_csv)} has no losses yet.</p></section>"
    note = ""
    if valid:
        best_step, best = min(valid, key=lambda point: point[1])
        note = (
            f"<p>Validation loss {valid[0][1]:.3f} at step {valid[0][0]}, {valid[-1][1]:.3f} at the last validation "
            f"(step {valid[-1][0]}); lowest {best:.3f} at step {best_step}.</p>"
        )
    with tempfile.TemporaryDirectory() as scratch:  # plot_loss writes a file; its suffix picks the SVG backend
        svg_path = Path(scratch) / "loss.svg"
        with _svg_text_as_text():
            plot_loss(metrics_csv, svg_path)
        return heading + note + _inline_svg(svg_path.read_text()) + "</section>"


def _svg_text_as_text():
    import matplotlib

    # Text stays <text> (selectable, searchable, small) instead of glyph outlines; the browser's own
    # sans-serif draws it.
    return matplotlib.rc_context({"svg.fonttype": "none", "font.family": "sans-serif"})


def _inline_svg(svg: str) -> str:
    return svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE, which have no place inside HTML


def _figure_svg(figure) -> str:
    buffer = io.StringIO()
    with _svg_text_as_text():
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return _inline_svg(buffer.getvalue())


def _metric_table(results: dict) -> str:
    scores, against = results["scores"], results["against"]
    header = ["metric"] + (
        [
            f"{_e(against)} (against)",
            f"{_e(results['model'])} (model)",
            "delta",
            "95 % interval",
            "wins / ties / losses",
        ]
        if against
        else [_e(results["model"])]
    )
    rows = []
    for metric in results["metrics"]:
        cells = [METRIC_LABELS.get(metric, metric)]
        if against:
            c = results["comparison"][metric]
            cells += [
                _value(metric, c["mean_a"]),
                _value(metric, c["mean_b"]),
                f"<span class='{_verdict(c)}'>{_delta(metric, c['delta'])}</span>",
                f"{_delta(metric, c['ci_low'])} to {_delta(metric, c['ci_high'])}",
                f"{c['wins']} / {c['ties']} / {c['losses']}",
            ]
        else:
            cells.append(_value(metric, scores["model"]["means"][metric]))
        rows.append(cells)
    extra = (["macro_f1"] if results["task"] == "classification" else []) + (
        ["corpus_bleu"] if "bleu" in results["metrics"] else []
    )
    for name in extra + [
        "loss",
        "perplexity",
        "token_accuracy",
        "latency_seconds_per_example",
        "tokens_per_second",
        "mean_output_tokens",
    ]:
        values = [
            (scores[side].get("classification", {}) if name == "macro_f1" else scores[side]).get(name)
            for side in ("against", "model")
            if side in scores
        ]
        cells = [METRIC_LABELS.get(name, name) + (" (lower is better)" if name in LOWER_IS_BETTER else "")]
        cells += [_value(name, v) for v in values]
        if against:
            cells += [_delta(name, values[1] - values[0]) if None not in values else "—", "", ""]
        rows.append(cells)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    note = (
        "<p class='meta'>Delta is model minus against; the interval is a paired bootstrap over the examples; a win "
        "is an "
        "example where the model scored higher than the against model.</p>"
        if against
        else ""
    )
    return (
        f"<section "
        f"id='metrics'><h2>Metrics</h2><table><tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>{body}</table>"
        f"{note}</section>"
    )


def _ab_bars(results: dict) -> str:
    """Per metric: both sides' means as bars, and the delta with its 95 % interval as a whisker."""
    from matplotlib.figure import Figure

    metrics, against = results["metrics"], results["against"]
    figure = Figure(figsize=(9, 0.6 + 1.1 * len(metrics)), dpi=100)
    axes = figure.subplots(len(metrics), 2 if against else 1, squeeze=False)
    for row, metric in enumerate(metrics):
        means = ([("against", results["comparison"][metric]["mean_a"], AGAINST_COLOUR)] if against else []) + [
            ("model", results["scores"]["model"]["means"][metric], MODEL_COLOUR)
        ]
        bars = axes[row][0]
        bars.barh([name for name, _, _ in means], [v for _, v, _ in means], color=[c for _, _, c in means])
        for y, (_, value, _) in enumerate(means):
            bars.annotate(f" {value:.3f}", (value, y), va="center", fontsize=9)
        bars.set_xlim(
            0, 1.05 if max(v for _, v, _ in means) <= 1 else 105
        )  # our per-example metrics are 0-1 or 0-100 (BLEU)
        bars.set_title(METRIC_LABELS.get(metric, metric), loc="left", fontsize=10)
        bars.invert_yaxis()
        if against:
            c = results["comparison"][metric]
            whisker = axes[row][1]
            colour = {"better": "#2e7d32", "worse": "#c62828", "unclear": "#52606d"}[_verdict(c)]
            whisker.errorbar(
                [c["delta"]],
                [0],
                xerr=[[c["delta"] - c["ci_low"]], [c["ci_high"] - c["delta"]]],
                fmt="o",
                color=colour,
                capsize=6,
                linewidth=2,
            )
            whisker.axvline(0, color="#9AA5B1", linestyle="--")
            span = max(abs(c["ci_low"]), abs(c["ci_high"]), abs(c["delta"]), 1e-3) * 1.3
            whisker.set_xlim(-span, span)
            whisker.set_yticks([])
            whisker.set_title(
                f"delta {c['delta']:+.3f}, 95 % interval [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                loc="left",
                fontsize=10,
            )
    figure.tight_layout()
    return f"<section id='ab'><h2>A/B per metric</h2>{_figure_svg(figure)}</section>"


def _confusion(results: dict) -> str:
    if results["task"] != "classification":
        return ""
    parts = [
        "<section id='confusion'><h2>Confusion matrices</h2><p class='meta'>Rows: the reference label; "
        "columns: what the model answered.</p><div class='sides'>"
    ]
    for side in ("against", "model"):
        confusion = results["scores"].get(side, {}).get("classification", {}).get("confusion")
        if not confusion:
            continue
        predicted = sorted({p for row in confusion.values() for p in row})
        top = max((n for row in confusion.values() for n in row.values()), default=1) or 1
        head = "".join(f"<th>{_e(p)}</th>" for p in predicted)
        body = "".join(
            f"<tr><th>{_e(label)}</th>"
            + "".join(
                f"<td style='background:rgba(76,114,176,{row.get(p, 0) / top * 0.6:.2f})'>{row.get(p, 0)}</td>"
                for p in predicted
            )
            + "</tr>"
            for label, row in confusion.items()
        )
        parts.append(
            f"<div><p class='label'>{_e(results[side])}</p><table><tr><th></th>{head}</tr>{body}</table></div>"
        )
    return "".join(parts) + "</div></section>"


def word_diff(reference: str, answer: str) -> str:
    """The answer as escaped HTML, with words the reference lacks in <ins> and reference words it lacks in <del>."""
    reference_tokens, answer_tokens = re.findall(r"\S+\s*", reference), re.findall(r"\S+\s*", answer)
    matcher = difflib.SequenceMatcher(
        a=[t.strip() for t in reference_tokens], b=[t.strip() for t in answer_tokens], autojunk=False
    )
    parts = []
    for operation, ref_start, ref_end, answer_start, answer_end in matcher.get_opcodes():
        if operation == "equal":
            parts.append(_e("".join(answer_tokens[answer_start:answer_end])))
            continue
        if ref_end > ref_start:
            parts.append(f"<del>{_e(''.join(reference_tokens[ref_start:ref_end]))}</del>")
        if answer_end > answer_start:
            parts.append(f"<ins>{_e(''.join(answer_tokens[answer_start:answer_end]))}</ins>")
    return "".join(parts)


def rank_examples(results: dict, examples: list[dict]) -> tuple[list[dict], list[dict]]:
    """(worst, best) examples by the main metric's per-example difference, model minus against; by the
    model's own score when there is no against model."""
    main = results["metrics"][0]

    def gain(row: dict) -> float:
        return row["model"][main] - (row["against"][main] if "against" in row else 0.0)

    ordered = sorted(examples, key=lambda row: (gain(row), row["model"][main], row["line"]))
    shown = min(SHOWN_EXAMPLES, len(ordered) // 2)
    return ordered[:shown], ordered[::-1][:shown]


def _examples(results: dict, examples: list[dict]) -> str:
    if not examples:
        return ""
    main = results["metrics"][0]
    worst, best = rank_examples(results, examples)
    ranking = "model minus against" if results["against"] else "the model's score"
    parts = [
        f"<section id='examples'><h2>Worst and best examples</h2><p class='meta'>Ranked by "
        f"{METRIC_LABELS.get(main, main)}, "
        f"{ranking}. In each answer, <ins>green</ins> words are not in the reference and <del>red</del> reference "
        f"words "
        f"are missing.</p>"
    ]
    for title, rows in (("Worst", worst), ("Best", best)):
        parts.append(f"<h3>{title}</h3>")
        for row in rows:
            sides = "".join(
                f"<div><p class='label'>{_e(results[side])} ({side}), {METRIC_LABELS.get(main, main)} "
                f"{_value(main, row[side][main])}</p>"
                f"<div class='text'>{word_diff(row['reference'], row[side]['answer'])}</div></div>"
                for side in ("against", "model")
                if side in row
            )
            parts.append(
                f"<div class='example'><p class='label'>Prompt (line {row['line']} of the data)</p><div "
                f"class='text'>{_e(row['prompt'])}</div>"
                f"<p class='label'>Reference</p><div class='text'>{_e(row['reference'])}</div><div "
                f"class='sides'>{sides}</div></div>"
            )
    return "".join(parts) + "</section>"


def _flatten(summary) -> dict:
    """One level of nesting as dotted names; the per-side summaries of probes are small dicts of numbers."""
    if not isinstance(summary, dict):
        return {}
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _probes(probes, results: dict) -> str:
    """Whatever probes ran, rendered generically: headline, per-side summary and comparison, the rows folded away."""
    if not isinstance(probes, dict) or not probes:
        return ""
    parts = ["<section id='probes'><h2>Probes</h2>"]
    for name, probe in probes.items():
        if not isinstance(probe, dict):
            continue
        parts.append(f"<h3>{_e(name)}</h3>")
        if probe.get("headline"):
            parts.append(f"<p>{_e(probe['headline'])}</p>")
        parts.append(_probe_summary(probe, results))
        rows = [_flatten(row) for row in probe.get("rows") or [] if isinstance(row, dict)]
        if rows:
            columns = list(dict.fromkeys(key for row in rows[:MAX_PROBE_ROWS] for key in row))
            parts.append(
                f"<details><summary>{min(len(rows), MAX_PROBE_ROWS)} of {len(rows)} prompts</summary>"
                f"<div class='wide'><table class='rows'><tr>"
                + "".join(f"<th>{_e(c)}</th>" for c in columns)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{_value(c, row[c]) if c in row else ''}</td>" for c in columns) + "</tr>"
                    for row in rows[:MAX_PROBE_ROWS]
                )
                + "</table></div></details>"
            )
    return "".join(parts) + "</section>"


def _probe_summary(probe: dict, results: dict) -> str:
    """One table: a line per figure, a column per side, and the probe's comparison figures in the last column."""
    sides = [side for side in ("against", "model") if isinstance(probe.get(side), dict)]
    summaries = {side: _flatten(probe[side]) for side in sides}
    comparison = _flatten(probe.get("comparison"))
    lines = [
        [_e(key)] + [_value(key, summaries[side].get(key)) for side in sides] + ([""] if comparison else [])
        for key in dict.fromkeys(key for side in sides for key in summaries[side])
    ]
    lines += [[_e(key)] + [""] * len(sides) + [_value(key, value)] for key, value in comparison.items()]
    if not lines:
        return ""
    head = "".join(f"<th>{_e(results.get(side))} ({side})</th>" for side in sides) + (
        "<th>comparison</th>" if comparison else ""
    )
    return (
        f"<table><tr><th></th>{head}</tr>"
        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in line) + "</tr>" for line in lines)
        + "</table>"
    )
