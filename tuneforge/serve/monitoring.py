"""What the server records about each request: a row in the request log (per project, read back by
GET /v1/tuneforge/metrics) and Prometheus series (GET /metrics, for the operator).

The Prometheus series come from `prometheus_client` in its own exposition format: counters of
requests by method, route template and status, a latency histogram in seconds, and token counters.
Labels hold only route templates (`/v1/files/{file_id}`; a path that matched no route is
`unmatched`), never a model name or anything else a caller chose, so no project's names reach
another and no request can forge or break a series. The counters are this process's since it started,
as Prometheus expects of every target.
"""

import time

from fastapi import Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from tuneforge.registry import access

UNMATCHED = "unmatched"
# Seconds: from a cached GET (milliseconds) to a long generation on a CPU (a minute or more).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    """One app's Prometheus series, in a registry of its own (two apps in one process never share counts)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tuneforge_requests",
            "Requests answered, by method, route template and HTTP status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "tuneforge_request_duration_seconds",
            "Time to answer a request (a stream: to its last event).",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "tuneforge_tokens",
            "Tokens read (prompt) and written (completion) by generation routes.",
            ("route", "kind"),
            registry=self.registry,
        )

    def observe(
        self, method: str, route: str, status: int, seconds: float, prompt_tokens: int, completion_tokens: int
    ) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if prompt_tokens or completion_tokens:
            self.tokens.labels(route, "prompt").inc(prompt_tokens)
            self.tokens.labels(route, "completion").inc(completion_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_template(request: Request) -> str | None:
    """The matched route with its placeholders (`/v1/files/{file_id}`); None when no route matched."""
    template = getattr(request.scope.get("route"), "path", None)
    if template is None:
        return None
    # Routers are mounted under /v1, and the route keeps its path without that prefix.
    return "/v1" + template if request.url.path.startswith("/v1/") and not template.startswith("/v1/") else template


def record_request(
    request: Request,
    status: int,
    began: float,
    *,
    model: str | None = None,
    usage: dict | None = None,
    error: str | None = None,
) -> None:
    """One answered request: its request-log row (for its project) and its Prometheus series."""
    route = route_template(request) or UNMATCHED
    seconds = time.perf_counter() - began
    usage = usage or {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    metrics: ServerMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.observe(request.method, route, status, seconds, prompt_tokens, completion_tokens)
    access.log_request(
        project=getattr(request.state, "project", None),
        method=request.method[:8],
        route=route,
        model=model,
        status_code=status,
        latency_ms=seconds * 1000,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error=error,
    )
