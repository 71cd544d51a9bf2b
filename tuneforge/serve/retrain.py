"""Feedback to training data: `tuneforge feedback export --out FILE [--format sft|dpo]`.

SFT: every completion rated good (its answer) or corrected (the correction) becomes a chat example.
DPO: every corrected completion becomes a preference pair, the correction preferred over what the
model said. Both write OpenAI's JSONL formats, which `tuneforge data check` and the jobs API accept.
"""

import json
from pathlib import Path
from typing import Literal

from tuneforge.errors import UsageError
from tuneforge.registry import access


def _prompt(completion: access.Completion) -> list[dict]:
    if completion.messages is not None:
        return [{"role": m["role"], "content": m.get("content") or ""} for m in completion.messages]
    return [{"role": "user", "content": completion.prompt or ""}]


def feedback_records(style: Literal["sft", "dpo"], project: str | None = None, model: str | None = None) -> list[dict]:
    records = []
    for feedback, completion in access.feedback_with_completions(project, model):
        prompt = _prompt(completion)
        if style == "sft":
            answer = feedback.correction or (completion.answer if feedback.rating > 0 else None)
            if answer:
                records.append({"messages": prompt + [{"role": "assistant", "content": answer}]})
        elif feedback.correction and feedback.correction.strip() != completion.answer.strip():
            records.append(
                {
                    "input": {"messages": prompt},
                    "preferred_output": [{"role": "assistant", "content": feedback.correction}],
                    "non_preferred_output": [{"role": "assistant", "content": completion.answer}],
                }
            )
    return records


def export_feedback(
    out: Path, style: Literal["sft", "dpo"], project: str | None = None, model: str | None = None
) -> int:
    if style not in ("sft", "dpo"):
        raise UsageError(f"--format {style}: choose sft or dpo")
    records = feedback_records(style, project, model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)
