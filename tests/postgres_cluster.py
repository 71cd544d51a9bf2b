"""A throw-away PostgreSQL cluster for the registry's tests: Debian's `postgresql` binaries, `initdb`
into a temporary directory and `pg_ctl start` on a free loopback port, torn down after.

initdb refuses to run as root, so where the tests run as root (CI, this machine) the cluster is the
`postgres` user's (the account Debian's package creates), its directory handed to that user; its
socket directory is the cluster's own, so nothing touches the machine's /var/run/postgresql.
"""

import glob
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from server_process import free_port

SERVICE_USER = "postgres"


def postgres_bin() -> Path | None:
    """The directory with initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class PostgresCluster:
    def __init__(self, directory: Path):
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.port = free_port()
        self.bin = postgres_bin()
        self.user = SERVICE_USER if os.geteuid() == 0 else None
        self.started = False

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def start(self) -> "PostgresCluster":
        if self.bin is None:
            raise RuntimeError("no PostgreSQL binaries (apt-get install postgresql)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if self.user:
            account = pwd.getpwnam(self.user)
            for path in (self.directory, self.sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
            self.directory.chmod(0o700)
            for parent in self.directory.parents:  # the service user must reach its directory
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o711)
        self._run("initdb", "-D", str(self.data), "-U", "tuneforge", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.started = True
        return self

    def create_database(self, name: str) -> str:
        """A new database; its SQLAlchemy URL (psycopg 3)."""
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
                    connection.execute(f'CREATE DATABASE "{name}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return f"postgresql+psycopg://tuneforge@127.0.0.1:{self.port}/{name}"

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=tuneforge dbname={database}"

    def stop(self) -> None:
        if self.started:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False
