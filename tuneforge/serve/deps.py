"""What the routes depend on, given by FastAPI's `Depends`: the caller's project (from its key), the
operator's and documentation guards, and the app's engine pool. Routers import this module, never
the app: the app imports the routers and attaches them.
"""

import threading

from fastapi import FastAPI, Request

from tuneforge.registry import access
from tuneforge.serve.protocol import APIError


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else ""


def project(request: Request) -> str:
    """The caller's project, from its API key; `--no-auth` makes every caller the default project."""
    if not request.app.state.options.auth:
        request.state.project = access.DEFAULT_PROJECT
        return access.DEFAULT_PROJECT
    key = bearer_key(request)
    if not key:
        raise APIError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
            "(create one with `tuneforge keys create --project NAME`).",
            code="invalid_api_key",
        )
    name = access.project_for_key(key)
    if name is None:
        raise APIError(401, f"Incorrect API key provided: {key[:6]}***.", code="invalid_api_key")
    if name == access.OPERATOR:
        raise APIError(
            403,
            "An operator key reads /metrics only; use a project's key (`tuneforge keys create --project NAME`).",
            code="operator_key",
        )
    request.state.project = name
    return name


def operator(request: Request) -> None:
    """/metrics: an operator key (`tuneforge keys create --operator`), unless --public-metrics or --no-auth."""
    options = request.app.state.options
    if not options.auth or options.public_metrics:
        return
    key = bearer_key(request)
    if not key or access.project_for_key(key) != access.OPERATOR:
        raise APIError(
            401,
            "/metrics needs an operator key: create one with `tuneforge keys create --operator`, "
            "or start the server with --public-metrics.",
            code="invalid_api_key",
        )


def any_key(request: Request) -> None:
    """/docs and /openapi.json: any valid key, unless --public-docs or --no-auth."""
    options = request.app.state.options
    if not options.auth or options.public_docs:
        return
    key = bearer_key(request)
    if not key or access.project_for_key(key) is None:
        raise APIError(
            401,
            "The API description needs an API key (or start the server with --public-docs).",
            code="invalid_api_key",
        )


_pool_lock = threading.Lock()


def engines(app: FastAPI):
    """The app's engine pool, made on first use: a server that only queues jobs never imports torch."""
    with _pool_lock:
        if getattr(app.state, "engines", None) is None:
            from tuneforge.inference.engine import EnginePool
            from tuneforge.runs.models import resolve_spec

            app.state.engines = EnginePool(
                capacity=app.state.options.max_cached_models,
                precision=app.state.options.precision,
                resolve=resolve_spec,
                device=app.state.options.device,
            )
        return app.state.engines
