"""`tuneforge eval MODEL --data FILE [--against BASE]`: the tuned model against the base on the same prompts.

For each model: generate an answer to every example's prompt (everything before its last assistant
turn) with the same greedy decoding, score it against the reference (the last assistant turn),
and measure the teacher-forced loss, perplexity and token accuracy on the references. Then compare
the two per metric: means, delta, paired-bootstrap 95 % interval, wins/ties/losses.

Default metrics follow the data: classification-like references -> accuracy and macro-F1; JSON
references -> JSON validity and exact match; free text -> ROUGE-L, BLEU and exact match. Preference
pairs (a DPO run's held-out data) are scored like free text against the preferred reply, plus the
preference accuracy: the share of pairs whose preferred reply the model gives the higher
log-probability per reply token (length-normalised: summed, a long reply loses to a terse one by
its length alone).
Writes `results.json` (everything), `examples.jsonl` (per example, both models), `report.md` and
`report.html` (the page for people: `evaluate/report.py`).
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneforge.data.examples import Conversation, Message, Preference
from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.errors import UsageError
from tuneforge.evaluate import metrics
from tuneforge.evaluate.compare import write_sheet
from tuneforge.evaluate.probes import DEFAULT_MAX_NEW_TOKENS as PROBE_MAX_NEW_TOKENS
from tuneforge.evaluate.probes import load_probe_sets, markdown_section, probe_model, summarize
from tuneforge.evaluate.report import write_html_report
from tuneforge.hardware import resolve_device
from tuneforge.inference.engine import Engine, ModelSpec, base_spec
from tuneforge.train.inputs import load_examples_and_report

PER_EXAMPLE = {
    "exact_match": metrics.exact_match,
    "normalized_exact_match": metrics.normalized_exact_match,
    "rouge_l": metrics.rouge_l,
    "bleu": metrics.sentence_bleu,
    "json_valid": lambda prediction, reference: metrics.json_valid(prediction),
    "accuracy": lambda prediction, reference: float(prediction.strip() == reference.strip()),
}
DEFAULT_METRICS = {
    "classification": ["accuracy", "exact_match"],
    "json": ["json_valid", "exact_match"],
    "text": ["rouge_l", "bleu", "exact_match"],
    "preference": ["rouge_l", "bleu"],
}
PREFERENCE_ACCURACY = "preference_accuracy"  # scored from log-probabilities, not from the generated answer


@dataclass
class Case:
    line: int
    prompt: list[Message]
    reference: str
    conversation: Conversation  # prompt + reference, for the teacher-forced loss
    rejected: Conversation | None = None  # a preference pair's prompt + non-preferred reply


def load_cases(path: Path, max_examples: int | None) -> list[Case]:
    return load_cases_and_labels(path, max_examples)[0]


def load_cases_and_labels(path: Path, max_examples: int | None) -> tuple[list[Case], bool]:
    """The cases, and whether the data check found the file classification-like."""
    examples, report = load_examples_and_report(path, "evaluation")
    cases = []
    for line, example in examples:
        if isinstance(example, Preference):
            reference = " ".join(m.content or "" for m in example.chosen if m.role == "assistant")
            cases.append(
                Case(
                    line,
                    example.prompt,
                    reference,
                    Conversation(example.prompt + example.chosen, example.tools),
                    Conversation(example.prompt + example.rejected, example.tools),
                )
            )
            continue
        if not isinstance(example, Conversation):
            raise UsageError(f"{path}: evaluation needs chat examples or preference pairs (line {line} is neither)")
        prompt, reference = example.split_at_last_reply()
        cases.append(
            Case(
                line, prompt, reference.content or "", Conversation(prompt + [Message("assistant", reference.content)])
            )
        )
    return (cases[:max_examples] if max_examples else cases), report.labels is not None


def generate_file(
    model: str,
    data: Path,
    out: Path,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    batch_size: int = 8,
    precision: str = "auto",
    resolve: Callable[[str], ModelSpec] = base_spec,
    device: str = "auto",
) -> int:
    """`tuneforge generate`: answer every example's prompt; write prompt, reference and answer per line.
    `resolve` turns the model's name into what to load (base models only by default; runs.models knows runs);
    `device` is where it generates (`hardware.resolve_device`)."""
    device = resolve_device(device)  # a missing device fails before the data is read
    cases = load_cases(data, None)
    engine = Engine(model, precision=precision, device=device, spec=resolve(model))
    with out.open("w") as handle:
        for start in range(0, len(cases), batch_size):
            chunk = cases[start : start + batch_size]
            answers = engine.generate([c.prompt for c in chunk], max_new_tokens, temperature)
            for case, answer in zip(chunk, answers):
                handle.write(
                    json.dumps(
                        {
                            "line": case.line,
                            "messages": [{"role": m.role, "content": m.content} for m in case.prompt],
                            "reference": case.reference,
                            "generation": answer.text,
                            "finish_reason": answer.finish_reason,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
    return len(cases)


def looks_like_labels(references: list[str]) -> bool:
    """A few short answers repeated across many examples: a label set, even in a small test split
    (the data check's own rule wants 20 examples, too many for a 5 % test split)."""
    distinct = {r.strip() for r in references}
    return (
        len(references) >= 4 and 2 <= len(distinct) <= min(50, len(references) // 2) and max(map(len, distinct)) <= 64
    )


def task_kind(references: list[str], classification_like: bool, preference: bool = False) -> str:
    if preference:
        return "preference"
    if classification_like or looks_like_labels(references):
        return "classification"
    if references and all(metrics.json_valid(r) for r in references):
        return "json"
    return "text"


def score_model(
    name: str, cases: list[Case], metric_names: list[str], max_new_tokens: int, batch_size: int, engine=None
) -> dict:
    """Generate, score and measure the loss of one model on every case (with `engine`, already loaded);
    the teacher-forced pass runs on the engine's device."""
    from tuneforge.train.loop import collate, evaluate

    engine = engine or Engine(name)
    generations, seconds = [], 0.0
    for start in range(0, len(cases), batch_size):
        chunk = cases[start : start + batch_size]
        began = time.perf_counter()
        generations += engine.generate([c.prompt for c in chunk], max_new_tokens=max_new_tokens)
        seconds += time.perf_counter() - began
    per_example = {m: [PER_EXAMPLE[m](g.text, c.reference) for g, c in zip(generations, cases)] for m in metric_names}
    encoded = ChatTokenizer(engine.tokenizer).encode([c.conversation for c in cases])
    pad = engine.pad_id
    teacher_forced = evaluate(
        engine.model,
        [collate(encoded[i : i + batch_size], pad) for i in range(0, len(encoded), batch_size)],
        device=engine.device,
    )
    if any(c.rejected is not None for c in cases):
        per_example[PREFERENCE_ACCURACY] = _preference_accuracy(engine, cases, batch_size)
    completion_tokens = sum(g.completion_tokens for g in generations)
    return {
        "model": name,
        "generations": [g.text for g in generations],
        "per_example": per_example,
        "means": {m: sum(v) / len(v) for m, v in per_example.items()},
        "corpus_bleu": metrics.corpus_bleu([g.text for g in generations], [c.reference for c in cases]),
        "loss": teacher_forced["valid_loss"],
        "perplexity": teacher_forced["valid_perplexity"],
        "token_accuracy": teacher_forced["valid_mean_token_accuracy"],
        "generation_seconds": seconds,
        "latency_seconds_per_example": seconds / len(cases),
        "completion_tokens": completion_tokens,
        "tokens_per_second": completion_tokens / seconds if seconds else 0.0,
        "mean_output_tokens": completion_tokens / len(cases),
    }


def _preference_accuracy(engine, cases: list[Case], batch_size: int) -> list[float]:
    """Per pair: 1.0 when the model gives the preferred reply the higher log-probability per reply
    token, else 0. Per token, not summed: a reply's summed log-probability falls with its length
    alone, so a long preferred reply against a terse one would lose whatever the model learned
    (benchmarks/dpo.py --shift: 0.30 for base and tuned alike, summed)."""
    from tuneforge.train.dpo import TokenizedPair, pair_log_probs

    tokenizer = ChatTokenizer(engine.tokenizer)
    chosen, rejected = tokenizer.encode([c.conversation for c in cases]), tokenizer.encode([c.rejected for c in cases])
    pairs = [TokenizedPair(a, b) for a, b in zip(chosen, rejected)]
    scores = pair_log_probs(engine.model, pairs, batch_size, engine.pad_id, engine.device)

    def reply_tokens(example) -> float:
        return max(float(example.loss_weights[1:].sum()), 1.0)  # the positions the log-probability sums

    return [
        float(better / reply_tokens(pair.chosen) > worse / reply_tokens(pair.rejected))
        for (better, worse), pair in zip(scores.tolist(), pairs)
    ]


def _score_side(
    spec: ModelSpec,
    cases: list[Case],
    metric_names: list[str],
    max_new_tokens: int,
    batch_size: int,
    probe_sets,
    probe_max_new_tokens: int,
    precision: str = "auto",
    device: str = "auto",
) -> tuple[dict, dict | None]:
    """One model, loaded once: its scores on the cases and, with `probe_sets`, its probe results.
    The engine dies with this call, so the next model never shares memory with it."""
    name = spec.name
    engine = Engine(name, precision=precision, device=device, spec=spec)
    scored = {
        **score_model(name, cases, metric_names, max_new_tokens, batch_size, engine),
        "precision": engine.precision,
        "device": engine.device,
    }
    if probe_sets is None:
        return scored, None
    return scored, probe_model(engine, probe_sets, probe_max_new_tokens, batch_size)


def run_eval(
    model: str,
    data: Path,
    against: str | None,
    metric_names: list[str] | None,
    out_dir: Path,
    max_examples: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    probes: bool = True,
    sheet: Path | None = None,
    precision: str = "auto",
    resolve: Callable[[str], ModelSpec] = base_spec,
    model_run_dir: Path | None = None,
    device: str = "auto",
) -> dict:
    """With `probes`, also the built-in forgetting, safety and bias probes (`probes.py`); with `sheet`,
    a blinded A/B sheet of the two models' answers for human raters (`compare.py`). `precision` is
    the engines' weights (inference/engine.py) and `device` where they run, generation and the
    teacher-forced pass alike; each side's scores record what they resolved to.
    `resolve` turns the names into what to load; `model_run_dir`, the model's run, gives the report
    its training curves. Recording the evaluation is the service layer's (`runs.evaluation`)."""
    device = resolve_device(device)  # a missing device fails before anything is loaded
    cases, classification_like = load_cases_and_labels(data, max_examples)
    references = [c.reference for c in cases]
    preference = bool(cases) and all(c.rejected is not None for c in cases)
    kind = task_kind(references, classification_like, preference)
    chosen = metric_names or DEFAULT_METRICS[kind]
    unknown = [m for m in chosen if m not in PER_EXAMPLE]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(unknown)}", fix=f"Choose from {', '.join(PER_EXAMPLE)}.")
    if sheet is not None and not against:
        raise UsageError(
            "a rating sheet compares two models, and there is no model to compare with",
            fix="Name one with --against, or drop --sheet.",
        )
    probe_sets = load_probe_sets() if probes else None
    probe_max_new_tokens = min(max_new_tokens, PROBE_MAX_NEW_TOKENS)  # a short eval stays short
    sides, probe_sides = {}, {}
    for side, name in (("model", model), ("against", against)):
        if name:
            sides[side], probe_sides[side] = _score_side(
                resolve(name),
                cases,
                chosen,
                max_new_tokens,
                batch_size,
                probe_sets,
                probe_max_new_tokens,
                precision,
                device,
            )
    chosen = chosen + ([PREFERENCE_ACCURACY] if preference else [])  # scored by score_model from log-probs
    results = {
        "model": model,
        "against": against,
        "data": str(data.resolve()),
        "examples": len(cases),
        "task": kind,
        "metrics": chosen,
        "decoding": {"temperature": 0.0, "max_new_tokens": max_new_tokens, "precision": precision, "device": device},
        "scores": {},
    }
    if probe_sets is not None:
        results["probes"] = summarize(probe_sets, probe_sides)
        results["decoding"]["probe_max_new_tokens"] = probe_max_new_tokens
    for side, scored in sides.items():
        summary = {k: v for k, v in scored.items() if k not in ("generations", "per_example")}
        if kind == "classification":
            report = metrics.classification(scored["generations"], references)
            summary["classification"] = {
                "accuracy": report.accuracy,
                "macro_f1": report.macro_f1,
                "confusion": report.confusion,
                "per_label_f1": report.per_label_f1,
            }
        results["scores"][side] = summary
    if against:
        results["comparison"] = {
            m: metrics.paired_bootstrap(
                sides["against"]["per_example"][m], sides["model"]["per_example"][m], seed=seed
            ).__dict__
            for m in chosen
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    with (out_dir / "examples.jsonl").open("w") as handle:
        for i, case in enumerate(cases):
            # "prompt" is the last user turn, what a reader looks for; "messages" the whole prompt the models saw.
            row = {
                "line": case.line,
                "prompt": case.prompt[-1].content,
                "messages": [{"role": m.role, "content": m.content} for m in case.prompt],
                "reference": case.reference,
            }
            for side, scored in sides.items():
                row[side] = {"answer": scored["generations"][i], **{m: scored["per_example"][m][i] for m in chosen}}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if sheet is not None:
        write_sheet(
            sheet,
            [
                (f"line-{c.line}", c.prompt, sides["model"]["generations"][i], sides["against"]["generations"][i])
                for i, c in enumerate(cases)
            ],
            model,
            against,
            data,
            out_dir,
            seed,
        )
    (out_dir / "report.md").write_text(markdown_report(results))
    write_html_report(results, out_dir, model_run_dir)
    return results


def headline(results: dict) -> dict:
    """What the registry keeps of an evaluation: per side the means, loss, perplexity and token
    accuracy; the comparison; the probes' headlines."""
    summary = {
        side: {k: scores[k] for k in ("means", "loss", "perplexity", "token_accuracy")}
        for side, scores in results["scores"].items()
    }
    if "comparison" in results:
        summary["comparison"] = results["comparison"]
    if "probes" in results:
        summary["probes"] = {name: probe["headline"] for name, probe in results["probes"].items()}
    return summary


def markdown_report(results: dict) -> str:
    model, against = results["model"], results["against"]
    lines = [
        f"# Evaluation of {model}",
        "",
        f"Data: `{results['data']}` ({results['examples']} examples, task: {results['task']}); "
        f"greedy decoding, at most {results['decoding']['max_new_tokens']} new tokens.",
        "",
    ]
    header = "| metric | " + (
        f"{against} (against) | {model} | delta | 95 % interval | wins/ties/losses |" if against else f"{model} |"
    )
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    scores = results["scores"]
    rows = [(m, scores["model"]["means"][m]) for m in results["metrics"]]
    for metric, value in rows:
        if against:
            c = results["comparison"][metric]
            lines.append(
                f"| {metric} | {c['mean_a']:.3f} | {c['mean_b']:.3f} | {c['delta']:+.3f} | "
                f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['wins']}/{c['ties']}/{c['losses']} |"
            )
        else:
            lines.append(f"| {metric} | {value:.3f} |")
    extra = ["loss", "perplexity", "token_accuracy"] + (["corpus_bleu"] if "bleu" in results["metrics"] else [])
    if results["task"] == "classification":
        extra.insert(0, "macro_f1")
    for name in extra + ["latency_seconds_per_example", "tokens_per_second"]:
        values = [
            scores[side]["classification"][name] if name == "macro_f1" else scores[side][name]
            for side in ("against", "model")
            if side in scores
        ]
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + (" | | | |" if against else " |"))
    if "probes" in results:
        lines += markdown_section(results["probes"])
    return "\n".join(lines) + "\n"
