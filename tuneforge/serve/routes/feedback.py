"""Tuneforge's additions under /v1/tuneforge: user feedback on completions, and request metrics.

POST /v1/tuneforge/feedback takes a completion id, a rating (1 or -1) and optionally the answer the
model should have given; `tuneforge feedback export` turns them into SFT or DPO training data.
GET /v1/tuneforge/metrics summarises the request log (latency, errors, tokens) for the caller's
project; GET /metrics is the operator's view of the whole server in Prometheus' format (routes,
statuses, latency histograms and tokens; no project's names), behind an operator key.
"""

from fastapi import APIRouter, Depends, Request, Response

from tuneforge.registry import access
from tuneforge.serve.deps import project
from tuneforge.serve.protocol import ErrorResponse, Feedback, FeedbackCreate, ObjectList, RequestMetrics, not_found

router = APIRouter(tags=["tuneforge"], responses={"4XX": {"model": ErrorResponse}})
prometheus = APIRouter(tags=["tuneforge"])


@router.post("/tuneforge/feedback")
def feedback(body: FeedbackCreate, owner: str = Depends(project)) -> Feedback:
    completion = access.get_completion(owner, body.completion_id)
    if completion is None:
        raise not_found("completion", body.completion_id, "completion_id")
    feedback_id = access.add_feedback(owner, completion.id, body.rating, body.correction, body.comment)
    return Feedback.recorded(feedback_id, completion, body.rating, body.correction)


@router.get("/tuneforge/metrics")
def metrics(owner: str = Depends(project)) -> ObjectList[RequestMetrics]:
    return ObjectList[RequestMetrics](data=access.request_summary(owner))


@prometheus.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=metrics.content_type)
