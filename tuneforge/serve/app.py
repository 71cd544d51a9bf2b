"""The OpenAI-compatible server: `tuneforge serve [--host 127.0.0.1] [--port 8000]`.

FastAPI under /v1 with OpenAI's paths, objects and error envelope, so `openai.OpenAI(base_url=...)`
works unchanged. Routes are thin (serve/routes/); the registry holds the state; training happens in
the worker process, which `serve` starts and restarts if it dies, never in this one.
"""

import logging
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneforge.registry import access
from tuneforge.serve.protocol import APIError

log = logging.getLogger("tuneforge.serve")


@dataclass
class ServerOptions:
    auth: bool = True
    start_worker: bool = True
    max_file_bytes: int = 512 * 1024 * 1024  # OpenAI's own cap for one file
    max_cached_models: int = 4
    precision: str = "auto"  # of the weights while generating: fast_llama.PRECISIONS


def project(request: Request) -> str:
    """The caller's project, from its API key; `--no-auth` makes every caller the default project."""
    if not request.app.state.options.auth:
        request.state.project = access.DEFAULT_PROJECT
        return access.DEFAULT_PROJECT
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not key:
        raise APIError(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                            "(create one with `tuneforge keys create --project NAME`).", code="invalid_api_key")
    name = access.project_for_key(key)
    if name is None:
        raise APIError(401, f"Incorrect API key provided: {key[:6]}***.", code="invalid_api_key")
    request.state.project = name
    return name


class WorkerSupervisor:
    """Keeps one `tuneforge worker` process alive beside the server; stops it on shutdown."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tuneforge", "worker"])
        log.info("worker started (pid %s)", self.process.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            code = self.process.poll()
            if code is not None and not self._stopping.is_set():
                log.warning("worker exited with %s; restarting it", code)
                time.sleep(1.0)
                self._spawn()

    def stop(self) -> None:
        self._stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: a running job checkpoints at the end of its step
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


_pool_lock = threading.Lock()


def engines(app: FastAPI):
    """The app's engine pool, made on first use: a server that only queues jobs never imports torch."""
    with _pool_lock:
        if getattr(app.state, "engines", None) is None:
            from tuneforge.serve.engine import EnginePool

            app.state.engines = EnginePool(capacity=app.state.options.max_cached_models, precision=app.state.options.precision)
        return app.state.engines


def create_app(options: ServerOptions | None = None) -> FastAPI:
    from tuneforge.serve.routes import chat, feedback, files, fine_tuning, models

    options = options or ServerOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        supervisor = WorkerSupervisor() if options.start_worker else None
        if supervisor:
            supervisor.start()
        app.state.supervisor = supervisor
        yield
        if supervisor:
            supervisor.stop()

    app = FastAPI(title="Tuneforge", version="1", lifespan=lifespan)
    app.state.options = options
    app.state.engines = None
    authenticated = [Depends(project)]
    for router in (files.router, fine_tuning.router, models.router, chat.router, feedback.router):
        app.include_router(router, prefix="/v1", dependencies=authenticated)
    app.include_router(feedback.prometheus)  # /metrics: scraped without a key, holds no user data
    _install_error_handlers(app)
    _install_request_log(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        request.state.error = error.message
        return JSONResponse(error.envelope(), status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        first = error.errors()[0]
        location = [str(part) for part in first["loc"] if part not in ("body", "query", "path", "form")]
        param = ".".join(location) or None
        message = f"Invalid value for '{param}': {first['msg']}" if param else first["msg"]
        return await api_error(request, APIError(400, message, param=param, code="invalid_value" if param else None))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        message = f"Unknown path {request.method} {request.url.path}" if error.status_code in (404, 405) else str(error.detail)
        return await api_error(request, APIError(error.status_code, message, code=code))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return await api_error(request, APIError(500, f"Internal server error ({type(error).__name__}); see the server log.",
                                                 type="server_error"))


def route_template(request: Request) -> str:
    """The matched route with its placeholders (`/v1/files/{file_id}`), so the log groups by endpoint."""
    template = getattr(request.scope.get("route"), "path", None)
    if template is None:
        return request.url.path
    # Routers are mounted under /v1, and the route keeps its path without that prefix.
    return "/v1" + template if request.url.path.startswith("/v1/") and not template.startswith("/v1/") else template


def _install_request_log(app: FastAPI) -> None:
    @app.middleware("http")
    async def record(request: Request, call_next):
        began = time.perf_counter()
        response = await call_next(request)
        if getattr(request.state, "logged_by_stream", False) or request.url.path == "/metrics":
            return response  # a stream logs itself when it ends
        usage = getattr(request.state, "usage", None) or {}
        access.log_request(project=getattr(request.state, "project", None), method=request.method,
                           route=route_template(request), model=getattr(request.state, "model", None),
                           status_code=response.status_code, latency_ms=(time.perf_counter() - began) * 1000,
                           prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
                           error=getattr(request.state, "error", None))
        return response
