"""Blinded A/B sheets for human raters, and their import as a win rate with an interval.

`tuneforge eval MODEL --data FILE --sheet ratings.csv` writes one row per example, `id, prompt,
answer_1, answer_2, preferred, comment`, the two models' answers on sides drawn per row by a seeded
RNG. Which side is which model goes to `ratings.key.json` beside it (with the model names, the
data's sha256 and the eval directory): keep the key away from the raters. A rater fills `preferred`
with 1, 2 or tie, or leaves it empty to skip the row.

`tuneforge eval import-ratings ratings.csv` reads the rated sheet with its key and computes the
tuned model's win rate over the other model (ties count half; they are reported separately too)
with a 95 % Wilson score interval; `runs.evaluation.import_ratings` records it in the registry.
"""

import csv
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneforge.data.examples import Message
from tuneforge.errors import TuneforgeError, UsageError

SHEET_COLUMNS = ["id", "prompt", "answer_1", "answer_2", "preferred", "comment"]
PREFERENCES = ("1", "2", "tie")
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
MAX_LISTED_PROBLEMS = 20  # a badly broken sheet lists this many and counts the rest


def key_path(sheet: Path) -> Path:
    """`ratings.csv` -> `ratings.key.json`, in the same directory."""
    return sheet.with_name(f"{sheet.stem}.key.json")


def prompt_text(messages: list[Message]) -> str:
    """What a rater reads: a lone user message as it is, a longer conversation turn by turn."""
    if len(messages) == 1:
        return messages[0].content or ""
    return "\n\n".join(f"{m.role}: {m.content or ''}" for m in messages)


def write_sheet(
    sheet: Path,
    examples: list[tuple[str, list[Message], str, str]],
    model: str,
    against: str,
    data: Path,
    eval_dir: Path,
    seed: int = 0,
) -> Path:
    """One row per `(id, prompt messages, model's answer, against's answer)`; returns the key's path."""
    from tuneforge.data.split import sha256_file

    rng = random.Random(seed)
    sides: dict[str, list[str]] = {}
    sheet.parent.mkdir(parents=True, exist_ok=True)
    with sheet.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SHEET_COLUMNS)
        for example_id, prompt, tuned_answer, other_answer in examples:
            swapped = rng.random() < 0.5
            sides[example_id] = ["against", "model"] if swapped else ["model", "against"]
            answers = (other_answer, tuned_answer) if swapped else (tuned_answer, other_answer)
            writer.writerow([example_id, prompt_text(prompt), *answers, "", ""])
    key = {
        "sheet": str(sheet.resolve()),
        "model": model,
        "against": against,
        "data": str(data.resolve()),
        "data_sha256": sha256_file(data),
        "eval_dir": str(eval_dir.resolve()),
        "seed": seed,
        "sides": sides,
    }  # id -> [side of answer_1, side of answer_2]; a side is "model" or "against"
    key_path(sheet).write_text(json.dumps(key, indent=2))
    return key_path(sheet)


@dataclass
class RatingResult:
    model: str
    against: str
    rated: int
    wins: int  # rows where the rater preferred the tuned model's answer
    ties: int
    losses: int
    unrated: int  # rows of the key left empty or missing from the sheet
    win_rate: float  # (wins + ties / 2) / rated
    ci_low: float  # 95 % Wilson score interval of the win rate
    ci_high: float
    tie_rate: float
    sheet: str
    data_sha256: str = ""  # of the evaluated data, from the sheet's key
    eval_dir: str = ""  # the evaluation the sheet came from
    registry_id: int | None = None  # set once the service layer records it

    def as_dict(self) -> dict:
        return asdict(self)


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion: stays inside [0, 1] and behaves at 0 % and 100 %, unlike
    the normal approximation, which matters for the few dozen ratings a sheet usually has."""
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _read_key(sheet: Path) -> dict:
    key = key_path(sheet)
    if not sheet.is_file():
        raise UsageError(
            f"no rating sheet at {sheet}", fix="Write one with `tuneforge eval MODEL --data FILE --sheet FILE.csv`."
        )
    if not key.is_file():
        raise UsageError(
            f"{sheet}: its key {key} is missing, so the answers cannot be told apart",
            fix="Keep the .key.json written with the sheet beside it, under the same name.",
        )
    try:
        return json.loads(key.read_text())
    except json.JSONDecodeError as error:
        raise TuneforgeError(
            f"{key}, line {error.lineno}: not valid JSON ({error.msg})",
            fix="Restore the key file as it was written with the sheet.",
        ) from None


def read_ratings(sheet: Path) -> tuple[dict, dict[str, str]]:
    """(the key, id -> "model" | "against" | "tie" for every rated row); every bad row is named."""
    key = _read_key(sheet)
    ratings: dict[str, str] = {}
    problems: list[str] = []
    # utf-8-sig: spreadsheet programs often save CSV with a byte-order mark.
    with sheet.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("id", "preferred") if c not in (reader.fieldnames or [])]
        if missing:
            raise TuneforgeError(
                f"{sheet}, line 1: the header has no {' or '.join(missing)} column",
                fix=f"Keep the header as written: {','.join(SHEET_COLUMNS)}.",
            )
        line = reader.line_num
        for row in reader:
            start, line = line + 1, reader.line_num  # a quoted answer can span several lines
            example_id, preferred = (row["id"] or "").strip(), (row["preferred"] or "").strip().lower()
            if example_id not in key["sides"]:
                problems.append(f"line {start}, field 'id': '{example_id}' is not in the key {key_path(sheet).name}")
            elif example_id in ratings:
                problems.append(f"line {start}, field 'id': '{example_id}' is rated twice")
            elif preferred not in PREFERENCES and preferred:
                problems.append(f"line {start}, field 'preferred': '{row['preferred']}' is not 1, 2 or tie")
            elif preferred:
                ratings[example_id] = "tie" if preferred == "tie" else key["sides"][example_id][int(preferred) - 1]
    if problems:
        listed = problems[:MAX_LISTED_PROBLEMS] + (
            [f"... and {len(problems) - MAX_LISTED_PROBLEMS} more"] if len(problems) > MAX_LISTED_PROBLEMS else []
        )
        raise TuneforgeError(
            f"{sheet}: {len(problems)} bad row(s):\n  " + "\n  ".join(listed),
            fix="Set preferred to 1, 2 or tie (empty skips the row), and keep the ids as written.",
        )
    if not ratings:
        raise TuneforgeError(f"{sheet}: no row is rated yet", fix="Fill the preferred column with 1, 2 or tie.")
    return key, ratings


def rate_sheet(sheet: Path) -> RatingResult:
    """The tuned model's win rate on the rated sheet (`runs.evaluation.import_ratings` records it)."""
    key, ratings = read_ratings(sheet)
    wins, ties = sum(r == "model" for r in ratings.values()), sum(r == "tie" for r in ratings.values())
    rated = len(ratings)
    # Ties as half a win make the count fractional; the Wilson interval still treats it as a proportion
    # of `rated` trials, which errs wide (a tie varies less than a coin toss between win and loss).
    score = wins + ties / 2
    low, high = wilson_interval(score, rated)
    return RatingResult(
        key["model"],
        key["against"],
        rated,
        wins,
        ties,
        rated - wins - ties,
        len(key["sides"]) - rated,
        score / rated,
        low,
        high,
        ties / rated,
        str(sheet.resolve()),
        data_sha256=key["data_sha256"],
        eval_dir=key["eval_dir"],
    )
