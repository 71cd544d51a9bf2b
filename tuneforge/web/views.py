"""What the dashboard's templates show, built from registry rows (no HTML here)."""

from datetime import UTC, datetime

from tuneforge.registry import jobs
from tuneforge.registry.jobs import Job

ACTIVE = ("validating_files", "queued", "running", "paused")
STEERABLE = {"cancel": ACTIVE, "pause": ("queued", "running"), "resume": ("paused",)}
CURVES = {  # series name -> (the metrics event field, which axis)
    "train_loss": ("train_loss", "loss"),
    "valid_loss": ("valid_loss", "loss"),
    "train_accuracy": ("train_mean_token_accuracy", "accuracy"),
    "valid_accuracy": ("valid_mean_token_accuracy", "accuracy"),
}


def when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def job_row(job: Job) -> dict:
    method = (job.method or {}).get("type", "supervised")
    return {
        "id": job.id,
        "model": job.model,
        "method": method,
        "status": job.status,
        "created": when(job.created_at),
        "finished": when(job.finished_at),
        "fine_tuned_model": job.fine_tuned_model or "",
        "trained_tokens": job.trained_tokens,
        "error": (job.error or {}).get("message"),
        "actions": [verb for verb, statuses in STEERABLE.items() if job.status in statuses],
        "active": job.status in ACTIVE,
    }


def job_list(project: str, limit: int = 100) -> list[dict]:
    rows, _ = jobs.list_jobs(project, None, limit)
    return [job_row(job) for job in rows]


def job_page(job: Job, event_limit: int = 50) -> dict:
    events = jobs.recent_messages(job.id, event_limit)  # the step reports are the curves'
    return {
        **job_row(job),
        "hyperparameters": job.resolved
        or ((job.method or {}).get((job.method or {}).get("type", ""), {}) or {}).get("hyperparameters", {}),
        "run_id": job.run_id,
        "events": [{"when": when(e.created_at), "level": e.level, "message": e.message} for e in events],
    }


def curves(job: Job, after_seq: int = 0) -> dict:
    """The job's curves as columns for uPlot: steps, and per series a value or None at each step;
    `last` is the sequence number to ask after next time (a live page fetches only what is new)."""
    rows = jobs.metric_events(job.id, after_seq)
    by_step: dict[int, dict] = {}
    for _, data in rows:
        if "step" in data:
            by_step.setdefault(int(data["step"]), {}).update(data)
    steps = sorted(by_step)
    return {
        "status": job.status,
        "last": rows[-1][0] if rows else after_seq,
        "step": steps,
        **{name: [by_step[s].get(field) for s in steps] for name, (field, _) in CURVES.items()},
    }


# ------------------------------------------------------------------------------------------ data
def file_row(row) -> dict:
    report = row.report or {}
    return {
        "id": row.id,
        "filename": row.filename,
        "purpose": row.purpose,
        "bytes": row.bytes,
        "status": row.status,
        "created": when(row.created_at),
        "examples": report.get("examples"),
        "errors": report.get("errors"),
        "warnings": report.get("warnings"),
    }


def file_list(project: str, limit: int = 100) -> list[dict]:
    rows, _ = jobs.list_files(project, "fine-tune", None, limit, True)
    return [file_row(row) for row in rows]


def checked_files(project: str) -> list[dict]:
    """The project's fine-tuning files that passed their data check: what a job or an evaluation may use."""
    return [f for f in file_list(project) if f["status"] == "processed"]


def file_page(row, token_report: dict | None = None) -> dict:
    """The stored data check (findings with line, field and fix; statistics; personal data) and,
    with `token_report` (the same check with a model's tokenizer), the token statistics."""
    report = row.report or {}
    stats = (token_report or report).get("stats") or {}
    return {
        **file_row(row),
        "details": row.status_details,
        "checked": row.status != "uploaded",
        "format": report.get("format"),
        "kind": report.get("kind"),
        # The stored check ran without a tokenizer; this page counts tokens itself (the button).
        "findings": [f for f in report.get("findings", []) if f.get("code") != "no_tokenizer"],
        "finding_counts": report.get("finding_counts", {}),
        "labels": report.get("labels"),
        "stats": stats,
        "histogram": _histogram_bars(stats.get("token_histogram") or []),
    }


def _histogram_bars(bins: list[dict], width: int = 600, height: int = 160) -> list[dict]:
    """SVG rectangles for the token-length histogram (attributes, not inline styles: the page's CSP)."""
    if not bins:
        return []
    tallest = max(b["count"] for b in bins) or 1
    step = width / len(bins)
    bars = []
    for index, b in enumerate(bins):
        h = round(b["count"] / tallest * (height - 20), 1)
        bars.append(
            {**b, "x": round(index * step + 1, 1), "w": round(step - 2, 1), "y": round(height - 20 - h, 1), "h": h}
        )
    return bars
