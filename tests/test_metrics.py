"""Evaluation metrics against hand-computed values and the reference libraries."""

import math

import pytest

from tuneforge.evaluate import metrics


def test_exact_match_plain_and_normalised():
    assert metrics.exact_match(" billing ", "billing") == 1.0
    assert metrics.exact_match("Billing.", "billing") == 0.0
    assert metrics.normalized_exact_match("The Billing!", "billing") == 1.0
    assert metrics.normalized_exact_match("an  answer, here", "Answer here") == 1.0
    assert metrics.normalized_exact_match("bug", "billing") == 0.0


def test_bleu_matches_a_hand_computed_value():
    # hypothesis vs reference: 1-gram 5/6, 2-gram 3/5, 3-gram 2/4, 4-gram 1/3, equal lengths (no brevity penalty)
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 2 * 1 / 3) ** 0.25
    assert metrics.corpus_bleu(["the cat sat on a mat"], ["the cat sat on the mat"]) == pytest.approx(
        expected, abs=0.01
    )
    assert metrics.sentence_bleu("the cat sat on a mat", "the cat sat on the mat") == pytest.approx(expected, abs=0.01)
    assert metrics.corpus_bleu(["identical words here today"], ["identical words here today"]) == pytest.approx(100.0)


def test_bleu_applies_the_brevity_penalty():
    # every n-gram of the 4-word hypothesis matches; the 6-word reference makes BP = exp(1 - 6/4)
    score = metrics.corpus_bleu(["the cat sat on"], ["the cat sat on the mat"])
    assert score == pytest.approx(100 * math.exp(1 - 6 / 4), abs=0.01)


def test_rouge_l_is_the_longest_common_subsequence_f_measure():
    # LCS("the cat sat on a mat", "the cat sat on the mat") = 5 tokens; P = R = 5/6
    assert metrics.rouge_l("the cat sat on a mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    # LCS = "a c" (2); P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7
    assert metrics.rouge_l("a b c", "a x c y") == pytest.approx(4 / 7)
    assert metrics.rouge_l("nothing shared", "entirely different") == 0.0


def test_rouge_l_scores_identical_non_latin_answers_as_identical():
    # rouge-score's default tokeniser keeps only [a-z0-9]: these had no tokens and scored 0
    assert metrics.rouge_l("Счёт отправлен клиенту.", "Счёт отправлен клиенту.") == pytest.approx(1.0)
    assert metrics.rouge_l("发票已发送给客户。", "发票已发送给客户。") == pytest.approx(1.0)


def test_rouge_l_splits_chinese_into_characters():
    # 7 characters each; LCS = 我喜欢学习 (5), so P = R = F = 5/7 rather than 0 for two different "words"
    score = metrics.rouge_l("我喜欢机器学习", "我喜欢深度学习")
    assert 0 < score < 1
    assert score == pytest.approx(5 / 7)


ENGLISH_PAIRS = [
    ("the cat sat on a mat", "the cat sat on the mat"),
    (
        "Open the Ledger tab, then click 'Invoices' -> Export (CSV).",
        "Go to the Ledger tab and click Invoices, then Export as CSV.",
    ),
    ("It's 3.14 or 42% -- don't_know!", "its 3 14 or 42 dont know"),
    ("REFUNDS take 5-7 business days", "Refunds take 5 to 7 business days."),
]


@pytest.mark.parametrize("prediction,reference", ENGLISH_PAIRS)
def test_rouge_l_on_english_matches_rouge_scores_default_tokeniser(prediction, reference):
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure
    assert metrics.rouge_l(prediction, reference) == pytest.approx(default)


def test_json_validity_and_schema():
    assert metrics.json_valid('{"label": "bug"}') == 1.0
    assert metrics.json_valid('```json\n{"label": "bug"}\n```') == 1.0
    assert metrics.json_valid("{'label': 'bug'}") == 0.0
    assert metrics.json_valid('Sure! {"label": "bug"}') == 0.0
    schema = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["bug", "billing"]}}}
    assert metrics.json_schema_valid('{"label": "bug"}', schema) == 1.0
    assert metrics.json_schema_valid('{"label": "other"}', schema) == 0.0
    assert metrics.json_schema_valid("not json", schema) == 0.0


def test_classification_accuracy_macro_f1_and_confusion():
    references = ["bug", "bug", "billing", "billing", "account"]
    predictions = ["bug", "billing", "billing", "billing", "bug"]
    result = metrics.classification(predictions, references)
    assert result.accuracy == pytest.approx(3 / 5)
    # bug: P 1/2 R 1/2 F 1/2; billing: P 2/3 R 1 F 4/5; account: F 0
    assert result.per_label_f1 == pytest.approx({"bug": 0.5, "billing": 0.8, "account": 0.0})
    assert result.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert result.confusion == {"account": {"bug": 1}, "billing": {"billing": 2}, "bug": {"bug": 1, "billing": 1}}


def test_paired_bootstrap_is_deterministic_and_brackets_the_delta():
    base = [0, 1, 0, 0, 1, 0, 1, 0, 0, 0] * 5
    tuned = [1, 1, 1, 0, 1, 1, 1, 0, 1, 1] * 5
    first = metrics.paired_bootstrap(base, tuned, seed=7)
    assert first == metrics.paired_bootstrap(base, tuned, seed=7)
    assert first.delta == pytest.approx(0.5)
    assert first.ci_low < first.delta < first.ci_high and first.ci_low > 0
    assert (first.wins, first.ties, first.losses) == (25, 25, 0)
    with pytest.raises(ValueError):
        metrics.paired_bootstrap([1, 0], [1])


def test_label_sets_are_recognised_in_small_test_splits():
    from tuneforge.evaluate.run import looks_like_labels

    assert looks_like_labels(["billing", "bug", "bug", "how_to", "billing", "account", "bug", "billing"])
    assert not looks_like_labels(
        ["Hi there! Open the Ledger tab.", "Hi there! Click Resend.", "Hi there! Go to Settings."]
    )
    assert not looks_like_labels(["yes", "no"])  # too few to tell
