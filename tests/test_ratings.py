"""Blinded A/B rating sheets: written by `tuneforge eval --sheet`, rated, imported as a win rate with
a Wilson interval into the registry; bad sheets are refused with the file, line and field named."""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from helpers import chat, reseeded_model, write_jsonl
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.evaluate.compare import SHEET_COLUMNS, key_path, wilson_interval
from tuneforge.runs.evaluation import import_ratings

EXAMPLES = 12


@pytest.fixture(scope="module")
def sheet(tmp_path_factory, tiny_model_dir):
    """A sheet written through the CLI (default `eval` command, no probes), comparing two different tiny models."""
    directory = tmp_path_factory.mktemp("ratings")
    other = reseeded_model(tiny_model_dir, 2, directory / "other-model")
    data = write_jsonl(
        directory / "questions.jsonl", [chat(f"Name a colour, number {i}.", f"Colour {i}") for i in range(EXAMPLES)]
    )
    path = directory / "sheets" / "ratings.csv"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(other),
            "--data",
            str(data),
            "--against",
            str(tiny_model_dir),
            "--max-tokens",
            "4",
            "--no-probes",
            "--sheet",
            str(path),
            "--out",
            str(directory / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "import-ratings" in result.output
    return path, str(other), str(tiny_model_dir), directory


def read_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def rate(sheet_path, wanted: list[str | None], target):
    """Fill `preferred` as a rater who knows the key: per row "model", "against", "tie" or None (unrated)."""
    sides = json.loads(key_path(sheet_path).read_text())["sides"]
    rows = read_rows(sheet_path)
    for row, want in zip(rows, wanted):
        row["preferred"] = "" if want is None else "tie" if want == "tie" else str(sides[row["id"]].index(want) + 1)
    key_path(target).write_text(key_path(sheet_path).read_text())
    return write_rows(target, rows)


def tuneforge(*args):
    env = {**os.environ, "COLUMNS": "150"}
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_sheet_hides_which_answer_is_which_behind_a_seeded_shuffle(sheet):
    path, model, against, directory = sheet
    rows = read_rows(path)
    key = json.loads(key_path(path).read_text())
    assert list(rows[0]) == SHEET_COLUMNS and len(rows) == EXAMPLES
    assert (key["model"], key["against"], key["eval_dir"]) == (model, against, str((directory / "eval").resolve()))
    assert len(key["data_sha256"]) == 64
    first_sides = [key["sides"][row["id"]][0] for row in rows]
    assert set(first_sides) == {"model", "against"}  # both orders occur
    answers = [json.loads(line) for line in (directory / "eval" / "examples.jsonl").read_text().splitlines()]
    for row, example in zip(rows, answers):
        side_1, side_2 = key["sides"][row["id"]]
        assert row["id"] == f"line-{example['line']}" and row["prompt"] == example["prompt"]
        assert (row["answer_1"], row["answer_2"]) == (example[side_1]["answer"], example[side_2]["answer"])
        assert row["preferred"] == row["comment"] == ""


def test_imported_ratings_give_the_win_rate_with_a_wilson_interval_in_the_registry(sheet, tmp_path):
    from tuneforge.registry import store

    path, model, against, _ = sheet
    # 6 wins, 2 ties, 2 losses, 2 unrated: win rate (6 + 2/2) / 10 = 0.7.
    rated = rate(path, ["model"] * 6 + ["tie"] * 2 + ["against"] * 2 + [None] * 2, tmp_path / "rated.csv")
    result = import_ratings(rated)
    assert (result.rated, result.wins, result.ties, result.losses, result.unrated) == (10, 6, 2, 2, 2)
    assert result.win_rate == pytest.approx(0.7) and result.tie_rate == pytest.approx(0.2)
    # Wilson score interval of 7 in 10 at 95 %, as published tables give it.
    assert (result.ci_low, result.ci_high) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    [row] = [r for r in store.list_human_ratings(model) if r.id == result.registry_id]
    assert (row.against, row.wins, row.ties, row.losses, row.win_rate) == (against, 6, 2, 2, pytest.approx(0.7))


def test_wilson_interval_stays_inside_zero_and_one():
    low, high = wilson_interval(5, 5)
    assert high == 1.0 and 0.5 < low < 0.6  # 5/5: [0.566, 1]
    assert wilson_interval(0, 5)[0] == 0.0


def test_import_ratings_command_prints_the_table_and_json(sheet, tmp_path):
    path, *_ = sheet
    rated = rate(path, ["against"] * 3 + ["model"] + [None] * (EXAMPLES - 4), tmp_path / "rated.csv")
    result = tuneforge("eval", "import-ratings", str(rated), "--json")
    assert result.returncode == 0, result.stderr
    imported = json.loads(result.stdout)
    assert (imported["wins"], imported["losses"], imported["win_rate"]) == (1, 3, 0.25)
    table = tuneforge("eval", "import-ratings", str(rated))
    assert table.returncode == 0 and "25.0%" in table.stdout and "95 % interval" in table.stdout


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda rows: rows[2].update(preferred="maybe"), r"line 4, field 'preferred': 'maybe' is not 1, 2 or tie"),
        (lambda rows: rows[1].update(id="line-999"), r"line 3, field 'id': 'line-999' is not in the key"),
    ],
)
def test_bad_sheet_rows_are_named_and_exit_non_zero(sheet, tmp_path, spoil, message):
    path, *_ = sheet
    rated = rate(path, ["model"] * EXAMPLES, tmp_path / "rated.csv")
    rows = read_rows(rated)
    spoil(rows)
    write_rows(rated, rows)
    result = tuneforge("eval", "import-ratings", str(rated))
    assert result.returncode == 1
    error = " ".join(result.stderr.split())
    assert "rated.csv" in error and re.search(message, error), error
    assert "fix:" in result.stderr and "Traceback" not in result.stderr


def test_a_sheet_without_its_key_or_without_ratings_is_refused(sheet, tmp_path):
    path, *_ = sheet
    lonely = tmp_path / "lonely.csv"
    lonely.write_text(path.read_text())
    result = tuneforge("eval", "import-ratings", str(lonely))
    assert result.returncode == 2 and "lonely.key.json is missing" in " ".join(result.stderr.split())
    unrated = rate(path, [None] * EXAMPLES, tmp_path / "unrated.csv")
    result = tuneforge("eval", "import-ratings", str(unrated))
    assert result.returncode == 1 and "no row is rated yet" in result.stderr


def test_a_sheet_needs_a_model_to_compare_with(tiny_model_dir, tmp_path):
    from tuneforge.errors import UsageError
    from tuneforge.runs.evaluation import run_eval

    data = write_jsonl(tmp_path / "q.jsonl", [chat("hi", "hello")])
    with pytest.raises(UsageError, match="compares two models"):
        run_eval(str(tiny_model_dir), data, None, None, tmp_path / "out", sheet=tmp_path / "sheet.csv")
    assert not (tmp_path / "sheet.csv").exists()
