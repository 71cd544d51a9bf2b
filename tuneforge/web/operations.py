"""The dashboard's operations page: the project's request log (serve/monitoring.py) as charts per
model over a chosen window (requests, errors, latency p50/p95, tokens), and the per-route summary
GET /v1/tuneforge/metrics gives."""

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from tuneforge.registry import access
from tuneforge.serve.deps import project
from tuneforge.serve.protocol import APIError
from tuneforge.web.render import fragment, page

router = APIRouter(include_in_schema=False)
WINDOWS = {1: "last hour", 24: "last day", 168: "last week"}
POINTS = 60  # buckets a chart spans: the window / 60, a minute at least


@router.get("/ui/operations")
def operations_page(request: Request) -> HTMLResponse:
    return page(request, "operations", "/ui/fragments/operations", "Operations")


@router.get("/ui/fragments/operations")
def operations_fragment(request: Request, owner: str = Depends(project)) -> HTMLResponse:
    routes = [row for row in access.request_summary(owner) if row["model"]]
    return fragment(request, "operations.html", routes=routes, windows=WINDOWS)


@router.get("/ui/series/operations")  # not under /ui/data/: that is the Data page's (a file's page)
def operations_series(hours: int = 24, owner: str = Depends(project)) -> JSONResponse:
    """Per model, a point per time bucket of the window (epoch seconds), for uPlot."""
    if hours not in WINDOWS:
        raise APIError(400, f"hours must be one of {', '.join(map(str, WINDOWS))}", param="hours")
    bucket = max(60, hours * 3600 // POINTS)
    now = datetime.now(UTC)
    since = now - timedelta(hours=hours)
    since = since.replace(second=0, microsecond=0)
    series = access.request_series(owner, since, bucket)
    return JSONResponse(
        {"since": int(since.timestamp()), "until": int(now.timestamp()), "bucket_seconds": bucket, "models": series},
        headers={"Cache-Control": "no-store"},
    )
