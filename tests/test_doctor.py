"""`tuneforge doctor`: one line per part of the setup, the fix for what fails, exit 1 if anything does."""

import json
import os
import subprocess
import sys

import pytest
from server_process import free_port


def doctor(home, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TUNEFORGE_HOME": str(home), "COLUMNS": "200", **env}
    if "TUNEFORGE_DATABASE_URL" not in env:
        environment.pop("TUNEFORGE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "doctor", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """The report's lines by part (`database`, `storage`...), with their fixes."""
    found, part = {}, None
    for line in result.stdout.splitlines():
        words = line.split()
        if words and words[0] in ("ok", "warn", "FAIL"):
            part = words[1]
            found[part] = line
        elif part and line.strip().startswith("fix:"):
            found[part] += "\n" + line.strip()
    return found


def test_a_fresh_home_passes_with_one_line_per_part(tmp_path):
    result = doctor(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = lines(result)
    assert list(report) == ["database", "storage", "backend", "models", "device"]
    assert (
        report["database"].startswith("ok") and "(sqlite)" in report["database"] and "0 job(s)" in report["database"]
    )
    assert str(tmp_path) in report["storage"] and "GB free" in report["storage"]
    assert report["backend"].startswith("warn") and "no worker is running" in report["backend"]
    assert "tuneforge worker" in report["backend"]  # its fix
    assert report["models"].startswith("ok") and "smollm2-135m-instruct" in report["models"]
    assert "Traceback" not in result.stderr


def test_a_postgresql_registry_is_named_without_its_password(tmp_path, postgres):
    url = postgres.create_database("doctor").replace("tuneforge@", "tuneforge:not-shown@")
    result = doctor(tmp_path, TUNEFORGE_DATABASE_URL=url)
    report = lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(postgresql)" in report["database"] and "0004_worker_lease" in report["database"]
    assert "not-shown" not in result.stdout


@pytest.mark.parametrize(
    "args,env,part,says",
    [
        (
            (),
            {"TUNEFORGE_DATABASE_URL": "postgresql+psycopg://tuneforge@127.0.0.1:{port}/none"},
            "database",
            "cannot open it",
        ),
        (("--backend", "ray", "--ray-address", "127.0.0.1:{port}"), {}, "backend", "cannot connect"),
    ],
)
def test_what_is_wrong_is_one_line_with_its_fix_and_exit_1(tmp_path, args, env, part, says):
    port = str(free_port())  # nothing listens there
    result = doctor(
        tmp_path, *(a.replace("{port}", port) for a in args), **{k: v.replace("{port}", port) for k, v in env.items()}
    )
    report = lines(result)
    assert result.returncode == 1, result.stdout + result.stderr
    assert report[part].startswith("FAIL") and says in report[part] and "\nfix: " in report[part]
    assert "Traceback" not in result.stdout + result.stderr
    assert len(report) == 5  # the other parts are still checked


def test_an_object_store_is_written_and_read_back(tmp_path, s3_store):
    result = doctor(tmp_path, **s3_store["env"])
    report = lines(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["storage"].startswith("ok") and "s3://tuneforge-artifacts/team" in report["storage"]
    s3_store["client"].invalidate_cache()
    assert s3_store["client"].glob("tuneforge-artifacts/team/.doctor/*") == []  # the probe was removed

    # Nothing listens there; one attempt (botocore's retries would take ~15 s to give up).
    options = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "config_kwargs": {"retries": {"max_attempts": 1}}}
    closed = {**s3_store["env"], "TUNEFORGE_STORAGE_OPTIONS": json.dumps(options)}
    result = doctor(tmp_path, **closed)
    assert result.returncode == 1 and lines(result)["storage"].startswith("FAIL")
    assert "TUNEFORGE_STORAGE_OPTIONS" in lines(result)["storage"] and "Traceback" not in result.stderr
