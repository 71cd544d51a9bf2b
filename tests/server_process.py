"""A real `tuneforge serve` on loopback, in its own process group, for the server's integration tests."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
from helpers import chat

LABELS = ["billing", "bug"]
TINY_LORA = {
    "lora_target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head",
    "precision": "fp32",
}


def tickets(n: int) -> list[dict]:
    return [chat(f"Ticket {i}: my {'invoice' if i % 2 else 'screen'} problem", LABELS[i % 2]) for i in range(n)]


def wait_for(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...], timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise TimeoutError(f"{job_id} still {job.status} after {timeout} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    def __init__(self, home: Path, *args: str, database_url: str | None = None, worker_home: Path | None = None):
        """`database_url`: a registry other than the home's SQLite file (conftest's `registry_url`).
        `worker_home`: the jobs train in a `tuneforge worker` of its own, on that other home (as on
        another machine: it shares only the registry and the object store), not in the server's."""
        self.home, self.args, self.worker_home = home, args, worker_home
        self.worker: subprocess.Popen | None = None
        self.port = free_port()
        # W&B offline: a job's `integrations` log to its run directory, never to the network.
        self.env = {**os.environ, "TUNEFORGE_HOME": str(home), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
        self.env.pop("TUNEFORGE_DATABASE_URL", None)
        if database_url:
            self.env["TUNEFORGE_DATABASE_URL"] = database_url
        self.log = home / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def database_url(self) -> str:
        return self.env.get("TUNEFORGE_DATABASE_URL") or f"sqlite:///{self.home / 'registry.db'}"

    def registry_row(self, sql: str, **params) -> tuple | None:
        """One row of the server's registry, read directly (what the API does not show, e.g. worker_pid)."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                row = connection.execute(text(sql), params).first()
                return tuple(row) if row is not None else None
        finally:
            engine.dispose()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 90) -> "ServerProcess":
        separate = ("--no-worker",) if self.worker_home else ()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tuneforge", "serve", "--port", str(self.port), *self.args, *separate],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.worker_home:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "tuneforge", "worker"],
                env={**self.env, "TUNEFORGE_HOME": str(self.worker_home), "TUNEFORGE_DATABASE_URL": self.database_url},
                stdout=(self.worker_home / "worker.log").open("ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2)
                return self
            except urllib.error.HTTPError:  # 401 without a key: up and answering
                return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"server did not start in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def cli(self, *args: str) -> str:
        """Run a `tuneforge` command against the same home; its standard output."""
        done = subprocess.run(
            [sys.executable, "-m", "tuneforge", *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def new_key(self, project: str) -> str:
        return self.cli("keys", "create", "--project", project).strip().splitlines()[-1]

    def stop(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(timeout=60)
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9 the server and everything it started (its worker)."""
        if self.process:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
