"""Metrics for a model's answers against reference answers, per example and over a set.

Per-example scores are what the A/B comparison resamples (`paired_bootstrap`); corpus-level BLEU is
sacrebleu's (the field's reference implementation), ROUGE-L is Google's rouge-score with a tokeniser
that keeps every script's letters, not only [a-z0-9] (`UnicodeTokenizer`). Exact match comes plain
and normalised (case, punctuation, articles and spacing ignored, as in SQuAD).
Teacher-forced loss, perplexity and token accuracy live with the trainer (`train/loop.evaluate`).
"""

import json
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

ARTICLES = re.compile(r"\b(a|an|the)\b")
CODE_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def normalize_answer(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


def normalized_exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """sacrebleu's corpus BLEU (0-100), one reference per example, default 13a tokenisation."""
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


def sentence_bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score


# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, Hiragana, Katakana and the
# CJK ideographs (with their extensions and compatibility forms). Each character is one token there,
# as Chinese BLEU and ROUGE usually count; Korean (Hangul) is written with spaces and stays in words.
WRITTEN_WITHOUT_SPACES = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003ffff]"
)


class UnicodeTokenizer:
    """rouge-score's tokeniser for every script: lower-cased runs of letters and digits.

    rouge-score's default keeps only [a-z0-9], so a Russian or Chinese answer has no tokens and
    scores 0 even against itself. On ASCII text this gives the default's tokens exactly; beyond it,
    accented letters stay in their word ("café", where the default keeps "caf"), combining marks
    stay with their letter (Devanagari vowel signs), NFKC folds full-width forms ("ＡＢＣ１" -> "abc1"),
    and each character of a script written without spaces is its own token.
    """

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        in_word = False  # whether the next letter or digit continues tokens[-1]
        after_letter = False  # whether a combining mark belongs to tokens[-1]
        for char in unicodedata.normalize("NFKC", text).lower():
            kind = unicodedata.category(char)[0]  # L letter, N number, M mark; the rest separate tokens
            if kind == "M" and after_letter:
                tokens[-1] += char
            elif kind in "LN" and WRITTEN_WITHOUT_SPACES.match(char):
                tokens.append(char)
                in_word, after_letter = False, True
            elif kind in "LN":
                if in_word:
                    tokens[-1] += char
                else:
                    tokens.append(char)
                in_word = after_letter = True
            else:
                in_word = after_letter = False
        return tokens


_rouge_scorer = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (0-1) from rouge-score, no stemming, tokenised by `UnicodeTokenizer`."""
    global _rouge_scorer
    if _rouge_scorer is None:
        from rouge_score import rouge_scorer

        _rouge_scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())
    return _rouge_scorer.score(reference, prediction)["rougeL"].fmeasure


def parse_json_answer(text: str):
    """The JSON value an answer holds (a ```json fence around it is allowed); raises ValueError."""
    stripped = text.strip()
    fenced = CODE_FENCE.match(stripped)
    return json.loads(fenced.group(1) if fenced else stripped)


def json_valid(prediction: str) -> float:
    try:
        parse_json_answer(prediction)
    except ValueError:
        return 0.0
    return 1.0


def json_schema_valid(prediction: str, schema: dict) -> float:
    import jsonschema

    try:
        jsonschema.validate(parse_json_answer(prediction), schema)
    except (ValueError, jsonschema.ValidationError):
        return 0.0
    return 1.0


@dataclass
class Classification:
    accuracy: float
    macro_f1: float
    labels: list[str]
    confusion: dict[str, dict[str, int]]  # reference label -> predicted label -> count
    per_label_f1: dict[str, float]


def classification(predictions: list[str], references: list[str]) -> Classification:
    """Accuracy, macro-F1 over the reference labels, and the confusion matrix (labels compared stripped)."""
    predicted = [p.strip() for p in predictions]
    actual = [r.strip() for r in references]
    labels = sorted(set(actual))
    confusion = {label: Counter() for label in labels}
    for truth, guess in zip(actual, predicted):
        confusion[truth][guess] += 1
    per_label = {}
    for label in labels:
        true_positive = confusion[label][label]
        predicted_as = sum(row[label] for row in confusion.values())
        actual_count = sum(confusion[label].values())
        precision = true_positive / predicted_as if predicted_as else 0.0
        recall = true_positive / actual_count if actual_count else 0.0
        per_label[label] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = sum(t == g for t, g in zip(actual, predicted)) / max(len(actual), 1)
    return Classification(
        accuracy,
        sum(per_label.values()) / max(len(labels), 1),
        labels,
        {label: dict(row) for label, row in confusion.items()},
        per_label,
    )


@dataclass
class Comparison:
    mean_a: float
    mean_b: float
    delta: float  # mean_b - mean_a
    ci_low: float  # 95 % paired-bootstrap interval of the delta
    ci_high: float
    wins: int  # examples where b scored higher
    ties: int
    losses: int


def paired_bootstrap(scores_a, scores_b, seed: int = 0, resamples: int = 2000) -> Comparison:
    """Compare two models scored on the same examples: resample examples with replacement, keep the
    pairing, and take the 2.5th and 97.5th percentiles of the mean difference."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError("paired_bootstrap needs two equally long, non-empty score lists")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    deltas = (b[picks] - a[picks]).mean(axis=1)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return Comparison(
        float(a.mean()),
        float(b.mean()),
        float(b.mean() - a.mean()),
        float(low),
        float(high),
        int((b > a).sum()),
        int((b == a).sum()),
        int((b < a).sum()),
    )
