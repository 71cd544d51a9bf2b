"""Stage 4 from the command line: `tuneforge serve`, `worker`, `keys ...` and `feedback export`."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from tuneforge.cli.common import DeviceOption, PrecisionOption, app, console

keys_app = typer.Typer(
    help="API keys: each belongs to a project and sees only that project's files, jobs and models.",
    no_args_is_help=True,
)
feedback_app = typer.Typer(
    help="User feedback on served completions, turned into training data.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(feedback_app, name="feedback")


class Backend(str, Enum):
    local = "local"
    ray = "ray"


BackendOption = Annotated[
    Backend,
    typer.Option(
        "--backend",
        help="Where jobs train: `local` (one at a time, in this machine's worker process) or `ray` (as Ray tasks, "
        "as many at once as the cluster has room for).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        "--address",
        help="With --backend ray: the cluster (`auto`: the one `ray start` runs on this machine; `ray://HOST:10001`). "
        "Without it, a Ray cluster is started on this machine.",
    ),
]
CpusPerProcessOption = Annotated[
    int, typer.Option(min=1, help="With --backend ray: CPUs a CPU job asks for per training process.")
]
NodeHomeOption = Annotated[
    str | None,
    typer.Option(
        "--node-home",
        help="With --backend ray and an object store (TUNEFORGE_STORAGE_URL): the Tuneforge home of tasks on each "
        "node, a local disk there (`{node}` becomes the Ray node's id). Without it, tasks use this home, which "
        "every node must then see at the same path.",
    ),
]


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Accept requests without an API key (local use only): all belong to the default project."
        ),
    ] = False,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not start a worker; run `tuneforge worker` yourself.")
    ] = False,
    max_file_mb: Annotated[int, typer.Option(min=1, help="Largest file upload accepted, in MB.")] = 512,
    max_cached_models: Annotated[
        int, typer.Option(min=1, help="Models (tuned adapters or full models) kept loaded at once.")
    ] = 4,
    precision: PrecisionOption = "auto",
    device: DeviceOption = "auto",
    allow_model_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-model-dir",
            help=(
                "A local model directory API callers may use as `model` (by this path); repeat for more. Requests "
                "can name no other path."
            ),
        ),
    ] = None,
    public_metrics: Annotated[
        bool,
        typer.Option(
            "--public-metrics", help="Serve /metrics without the operator key (`tuneforge keys create --operator`)."
        ),
    ] = False,
    public_docs: Annotated[
        bool, typer.Option("--public-docs", help="Serve /docs and /openapi.json without an API key.")
    ] = False,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="With --no-auth: another Host name to accept (the listening address and localhost always are).",
        ),
    ] = None,
    backend: BackendOption = Backend.local,
    ray_address: RayAddressOption = None,
    cpus_per_process: CpusPerProcessOption = 1,
    node_home: NodeHomeOption = None,
):
    """An OpenAI-compatible API: files, fine-tuning jobs, models, chat and text completions."""
    import uvicorn

    from tuneforge.serve.app import ServerOptions, create_app
    from tuneforge.settings import protect_home
    from tuneforge.web import install_dashboard

    if device != "cpu" and (device != "auto" or precision == "int8"):
        # A device named but not there, or int8 off the CPU, fails now rather than at every request
        # (the engine pool, and torch with it, is otherwise first loaded by the first request that needs it).
        from tuneforge.hardware import resolve_device
        from tuneforge.inference.engine import device_precision

        device_precision(precision, resolve_device(device))
    protect_home()  # uploads, runs and the registry: readable by this user only
    options = ServerOptions(
        auth=not no_auth,
        start_worker=not no_worker,
        max_file_bytes=max_file_mb * 1024 * 1024,
        max_cached_models=max_cached_models,
        precision=precision,
        device=device,
        allowed_model_dirs=tuple(str(p) for p in allow_model_dir or ()),
        public_metrics=public_metrics,
        public_docs=public_docs,
        host=host,
        allowed_hosts=tuple(allowed_host or ()),
        worker_args=("--backend", backend.value, "--cpus-per-process", str(cpus_per_process))
        + (("--ray-address", ray_address) if ray_address else ())
        + (("--node-home", node_home) if node_home else ()),
    )
    app_ = create_app(options)
    install_dashboard(app_)
    console.print(
        f"Tuneforge API on http://{host}:{port}/v1, dashboard on http://{host}:{port}/ "
        f"({'no auth' if no_auth else 'API keys required'}"
        f"{f', {backend.value} worker started' if not no_worker else ''})"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command("worker")
def worker(
    poll_seconds: Annotated[float, typer.Option(help="Seconds between looks at the queue when idle.")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Carry out what is queued, then exit.")] = False,
    parent_pid: Annotated[
        int | None,
        typer.Option(help="Exit (checkpointing a running job) when this process is gone; `serve` passes its own."),
    ] = None,
    backend: BackendOption = Backend.local,
    ray_address: RayAddressOption = None,
    cpus_per_process: CpusPerProcessOption = 1,
    node_home: NodeHomeOption = None,
):
    """Carry out queued fine-tuning jobs (`tuneforge serve` starts a worker for you)."""
    from tuneforge.settings import protect_home

    protect_home()
    if backend is Backend.ray:
        from tuneforge.jobs.ray_backend import run_ray_dispatcher

        run_ray_dispatcher(
            ray_address, cpus_per_process, poll_seconds, once, parent_pid=parent_pid, node_home=node_home
        )
    else:
        from tuneforge.jobs.worker import run_worker

        run_worker(poll_seconds, once, parent_pid=parent_pid)


@keys_app.command("create")
def keys_create(
    project: Annotated[str | None, typer.Option("--project", help="The project the key belongs to.")] = None,
    operator: Annotated[
        bool,
        typer.Option("--operator", help="A key for the server's operator: reads /metrics, belongs to no project."),
    ] = False,
):
    """Create an API key; it is printed once and stored only as a hash."""
    from tuneforge.errors import UsageError
    from tuneforge.registry import access

    if operator == (project is not None):
        raise UsageError("give either --project NAME or --operator", fix="tuneforge keys create --project support")
    key = access.create_key(access.OPERATOR if operator else project)
    console.print(
        "Operator key (reads /metrics; shown once, keep it secret):"
        if operator
        else f"API key for project [bold]{project}[/bold] (shown once, keep it secret):"
    )
    print(key)


@keys_app.command("list")
def keys_list():
    """Keys by prefix, project and state."""
    from rich.table import Table

    from tuneforge.registry import access

    table = Table(title="API keys")
    for column in ("prefix", "project", "created", "state"):
        table.add_column(column)
    for key in access.list_keys():
        table.add_row(
            key.prefix + "…",
            "(operator)" if key.project == access.OPERATOR else key.project,
            key.created_at.isoformat(timespec="seconds"),
            "revoked" if key.revoked_at else "active",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: Annotated[str, typer.Argument(help="The key's prefix, as `tuneforge keys list` shows it.")]):
    """Revoke a key: requests with it get 401 from then on."""
    from tuneforge.errors import UsageError
    from tuneforge.registry import access

    if not access.revoke_key(prefix.rstrip("…")):
        raise UsageError(f"no active key with prefix '{prefix}'", fix="See `tuneforge keys list`.")
    console.print(f"revoked {prefix}")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help=(
                "sft: good or corrected answers as chat examples; dpo: corrections preferred over the model's answers."
            ),
        ),
    ] = "sft",
    project: Annotated[str | None, typer.Option(help="Only this project's feedback.")] = None,
    model: Annotated[str | None, typer.Option(help="Only feedback on this model's completions.")] = None,
):
    """Write feedback on served completions as training data."""
    from tuneforge.serve.retrain import export_feedback

    written = export_feedback(out, format, project, model)
    console.print(f"wrote {written} {format.upper()} examples to {out}")
