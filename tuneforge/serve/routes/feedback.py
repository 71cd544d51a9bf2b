"""Tuneforge's additions under /v1/tuneforge: user feedback on completions, and request metrics.

POST /v1/tuneforge/feedback takes a completion id, a rating (1 or -1) and optionally the answer the
model should have given; `tuneforge feedback export` turns them into SFT or DPO training data.
GET /v1/tuneforge/metrics summarises the request log (latency, errors, tokens) for the caller's
project; GET /metrics gives the same for every project in Prometheus' text format.
"""

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from tuneforge.registry import access
from tuneforge.serve.app import project
from tuneforge.serve.protocol import FeedbackCreate, not_found

router = APIRouter(tags=["tuneforge"])
prometheus = APIRouter(tags=["tuneforge"])


@router.post("/tuneforge/feedback")
def feedback(body: FeedbackCreate, owner: str = Depends(project)) -> dict:
    completion = access.get_completion(owner, body.completion_id)
    if completion is None:
        raise not_found("completion", body.completion_id, "completion_id")
    feedback_id = access.add_feedback(owner, completion.id, body.rating, body.correction, body.comment)
    return {"id": f"feedback-{feedback_id}", "object": "tuneforge.feedback", "completion_id": completion.id,
            "model": completion.model, "rating": body.rating, "correction": body.correction}


@router.get("/tuneforge/metrics")
def metrics(owner: str = Depends(project)) -> dict:
    return {"object": "list", "data": access.request_summary(owner)}


@prometheus.get("/metrics", response_class=PlainTextResponse)
def prometheus_metrics() -> str:
    lines = ["# HELP tuneforge_requests_total Requests served, by route, model and outcome.",
             "# TYPE tuneforge_requests_total counter"]
    summary = access.request_summary()
    for row in summary:
        labels = f'method="{row["method"]}",route="{row["route"]}",model="{row["model"] or ""}"'
        lines.append(f'tuneforge_requests_total{{{labels},outcome="ok"}} {row["requests"] - row["errors"]}')
        lines.append(f'tuneforge_requests_total{{{labels},outcome="error"}} {row["errors"]}')
    lines += ["# HELP tuneforge_request_latency_ms Request latency in milliseconds.", "# TYPE tuneforge_request_latency_ms gauge"]
    for row in summary:
        labels = f'method="{row["method"]}",route="{row["route"]}",model="{row["model"] or ""}"'
        for stat in ("mean", "p50", "p95", "max"):
            lines.append(f'tuneforge_request_latency_ms{{{labels},stat="{stat}"}} {row["latency_ms"][stat]:.3f}')
    lines += ["# HELP tuneforge_tokens_total Tokens processed.", "# TYPE tuneforge_tokens_total counter"]
    for row in summary:
        labels = f'route="{row["route"]}",model="{row["model"] or ""}"'
        lines.append(f'tuneforge_tokens_total{{{labels},kind="prompt"}} {row["prompt_tokens"]}')
        lines.append(f'tuneforge_tokens_total{{{labels},kind="completion"}} {row["completion_tokens"]}')
    return "\n".join(lines) + "\n"
