"""The OpenAI-compatible server: `tuneforge serve [--host 127.0.0.1] [--port 8000]`.

FastAPI under /v1 with OpenAI's paths, objects and error envelope, so `openai.OpenAI(base_url=...)`
works unchanged. Routes are thin (serve/routes/); the registry holds the state; training happens in
the worker process, which `serve` starts and restarts if it dies, never in this one.
"""

import ipaddress
import logging
import os
import socket
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

from tuneforge.errors import ContextTooLong, UsageError
from tuneforge.serve.deps import any_key, operator, project
from tuneforge.serve.monitoring import ServerMetrics, record_request
from tuneforge.serve.protocol import APIError

log = logging.getLogger("tuneforge.serve")


@dataclass
class ServerOptions:
    auth: bool = True
    start_worker: bool = True
    max_file_bytes: int = 512 * 1024 * 1024  # OpenAI's own cap for one file
    max_cached_models: int = 4
    precision: str = "auto"  # of the weights while generating: fast_llama.PRECISIONS
    device: str = "auto"  # where models generate: hardware.resolve_device (auto, cpu, cuda, cuda:N, mps)
    # Local model directories API callers may name (by these paths); requests never name other paths.
    allowed_model_dirs: tuple[str, ...] = ()
    public_metrics: bool = False  # /metrics without the operator key (a Prometheus on a trusted network)
    public_docs: bool = False  # /docs and /openapi.json without a key
    host: str = "127.0.0.1"  # the address served: with --no-auth, the only Host header accepted (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()  # further Host names accepted with --no-auth
    worker_args: tuple[str, ...] = ()  # passed on to `tuneforge worker` (its backend)


class WorkerSupervisor:
    """Keeps one `tuneforge worker` process alive beside the server; stops it on shutdown."""

    def __init__(self, args: tuple[str, ...] = ()):
        self.args = args
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        # --parent-pid: the worker exits when this server is gone, even after a kill -9 of it.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "worker", "--parent-pid", str(os.getpid()), *self.args]
        )
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


def create_app(options: ServerOptions | None = None) -> FastAPI:
    from tuneforge.serve.model_access import allowed_model_dirs
    from tuneforge.serve.routes import chat, feedback, files, fine_tuning, models

    options = options or ServerOptions()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        supervisor = WorkerSupervisor(options.worker_args) if options.start_worker else None
        if supervisor:
            supervisor.start()
        app.state.supervisor = supervisor
        yield
        if supervisor:
            supervisor.stop()

    # The API description is served below behind a key (or --public-docs), not by FastAPI's open defaults.
    app = FastAPI(title="Tuneforge", version="1", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.options = options
    app.state.engines = None
    app.state.allowed_model_dirs = allowed_model_dirs(options.allowed_model_dirs)
    app.state.metrics = ServerMetrics()
    authenticated = [Depends(project)]
    for router in (files.router, fine_tuning.router, models.router, chat.router, feedback.router):
        app.include_router(router, prefix="/v1", dependencies=authenticated)
    app.include_router(feedback.prometheus, dependencies=[Depends(operator)])
    _install_docs(app)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, max_file_bytes=options.max_file_bytes)  # inside the request log: its 413s are logged
    _install_request_log(app)
    return app


def _install_docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(any_key)])
    def openapi_description() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(any_key)])
    def docs_page():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Tuneforge API")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        request.state.error = error.message
        return answer(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        first = _most_telling(error.errors())
        if first.get("type") == "json_invalid":  # its `loc` is a character offset, not a field
            return await api_error(
                request,
                APIError(
                    400,
                    "We could not parse the JSON body of your request: it is not valid JSON. Send a JSON object "
                    "with the header Content-Type: application/json.",
                    code="invalid_json",
                ),
            )
        location = [
            str(part) for part in first["loc"] if part not in ("body", "query", "path", "form") and not _type_tag(part)
        ]
        param = ".".join(location) or None
        message = f"Invalid value for '{param}': {first['msg']}" if param else first["msg"]
        return await api_error(request, APIError(400, message, param=param, code="invalid_value" if param else None))

    @app.exception_handler(UsageError)
    async def unusable_input(request: Request, error: UsageError):
        # What the stages refuse in a request's input: an option the engine cannot honour names its
        # field (`error.param`); otherwise (a prompt longer than the context, say) the field the route
        # passed on, in `request.state.input_param`.
        code = getattr(error, "code", None) or (
            "context_length_exceeded" if isinstance(error, ContextTooLong) else "invalid_value"
        )
        param = getattr(error, "param", None) or getattr(request.state, "input_param", None)
        return await api_error(
            request, APIError(400, error.message + (f" {error.fix}" if error.fix else ""), param=param, code=code)
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        message = (
            f"Unknown path {request.method} {request.url.path}"
            if error.status_code in (404, 405)
            else str(error.detail)
        )
        return await api_error(request, APIError(error.status_code, message, code=code))


def answer(error: APIError, headers: dict | None = None) -> JSONResponse:
    """An APIError as the response: OpenAI's envelope with the error's status."""
    return JSONResponse(error.envelope(), status_code=error.status, headers=headers)


def _most_telling(errors: list[dict]) -> dict:
    """Of pydantic's errors, the one to report. A field that is a union (`str | list[str]`) fails once
    per member; the deepest failure, and one about the value rather than its type, is the real one
    (`stop: [""]` is a list with an empty string, not "not a string")."""
    return max(errors, key=lambda e: (len(e["loc"]), not e.get("type", "").endswith("_type")))


def _type_tag(part) -> bool:
    """Pydantic names a union member in `loc` (`str`, `list[str]`, `constrained-str`): not a field."""
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "dict", "list", "none"}
        or "[" in part
        or part.startswith(("constrained-", "function-", "literal"))
    )


def _install_request_log(app: FastAPI) -> None:
    allowed_hosts = _allowed_hosts(app.state.options)

    @app.middleware("http")
    async def record(request: Request, call_next):
        began = time.perf_counter()
        if allowed_hosts is not None and not _host_allowed(request.headers.get("host", ""), allowed_hosts):
            # With --no-auth, a page on another site that rebinds its DNS name to 127.0.0.1 must not reach us.
            return answer(
                APIError(
                    400,
                    "Host header not allowed on this server (it runs without API keys); "
                    "use the address it listens on, or start it with --allowed-host NAME.",
                    code="invalid_host",
                )
            )
        try:
            response = await call_next(request)
        except Exception as error:  # a bug of ours: logged, counted and answered, and the connection stays open
            log.exception("internal error on %s %s", request.method, request.url.path)
            request.state.error = f"{type(error).__name__}: {error}"
            response = answer(
                APIError(
                    500, f"Internal server error ({type(error).__name__}); see the server log.", type="server_error"
                )
            )
        if getattr(request.state, "logged_by_stream", False) and response.status_code == 200:
            return response  # a stream records itself when it ends, with its real latency and tokens
        record_request(
            request,
            response.status_code,
            began,
            model=getattr(request.state, "model", None),
            usage=getattr(request.state, "usage", None),
            error=getattr(request.state, "error", None),
        )
        return response


# Bound to every interface: any address literal is accepted (DNS rebinding needs a name), and this machine's name.
EVERY_INTERFACE = {"0.0.0.0", "::"}


def _allowed_hosts(options: ServerOptions) -> set[str] | None:
    """Host names accepted when the server runs without keys; None (any) when keys are required."""
    if options.auth:
        return None
    return {"localhost", "127.0.0.1", "::1", options.host.lower(), *(h.lower() for h in options.allowed_hosts)}


def _host_allowed(header: str, allowed: set[str]) -> bool:
    host = header.lower()
    host = (
        host[1 : host.index("]")]
        if host.startswith("[") and "]" in host
        else host.rsplit(":", 1)[0]
        if host.count(":") == 1
        else host
    )
    if host in allowed:
        return True
    if allowed & EVERY_INTERFACE:
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host == socket.gethostname().lower()
    return False


class RequestTooLarge(Exception):
    pass


class BodyLimit:
    """Stops reading a request body at the cap: an upload past `max_file_bytes` (plus room for the
    form's other fields) or any other body past 16 MB answers 413 without being read to its end,
    so nothing larger than the cap is ever spooled to disk."""

    FORM_ROOM = 64 * 1024
    OTHER_BODIES = 16 * 1024 * 1024

    def __init__(self, app, max_file_bytes: int):
        self.app, self.max_file_bytes = app, max_file_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].rstrip("/") == "/v1/files"
        limit = self.max_file_bytes + self.FORM_ROOM if upload else self.OTHER_BODIES
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(scope, send, upload, limit)
        seen, overflowed, started = 0, False, False

        async def counting_receive():
            nonlocal seen, overflowed
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflowed = True
                    raise RequestTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if overflowed:
                return  # the app's answer to a body cut short (FastAPI makes it a 400); ours is the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except RequestTooLarge:
            pass
        if overflowed and not started:
            await self._refuse(scope, send, upload, limit)

    async def _refuse(self, scope, send, upload: bool, limit: int) -> None:
        if upload:
            error = APIError(
                413,
                f"The request is larger than this server's limit of {self.max_file_bytes:,} bytes (start "
                "`tuneforge serve` with a larger --max-file-mb).",
                param="file",
                code="file_too_large",
            )
        else:
            error = APIError(413, f"The request body is over {limit:,} bytes.", code="request_too_large")
        await answer(error, headers={"connection": "close"})(scope, None, send)
