"""What an adversarial pass found, fixed and kept fixed, through a real `tuneforge serve` on loopback:
two projects with their own keys, hostile model names and bodies, bounds, uploads past the cap,
/metrics for the operator only, and a list of hostile requests that must never get a 5xx."""

import http.client
import json
import os
import shutil
import socket
import sqlite3
import stat
import time

import openai
import pytest
from helpers import filler, write_jsonl
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("hostile-home")
    # Another project's "full fine-tune" where a run keeps one: a real model directory on the server's disk.
    shutil.copytree(tiny_model_dir, home / "runs" / "run-other" / "model")
    process = ServerProcess(
        home, "--no-worker", "--max-file-mb", "1", "--allow-model-dir", str(tiny_model_dir)
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keys(server) -> dict:
    return {
        "alpha": server.new_key("alpha"),
        "beta": server.new_key("beta"),
        "operator": server.cli("keys", "create", "--operator").strip().splitlines()[-1],
    }


@pytest.fixture(scope="module")
def alpha(server, keys) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=keys["alpha"], max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def training_file(alpha, tmp_path_factory):
    data = write_jsonl(tmp_path_factory.mktemp("hostile-data") / "train.jsonl", filler(12))
    return alpha.files.wait_for_processing(
        alpha.files.create(file=data.open("rb"), purpose="fine-tune").id, poll_interval=0.2, max_wait_seconds=60
    )


def raw(
    server,
    method: str,
    path: str,
    body: bytes | dict | None = None,
    key: str | None = None,
    headers: dict | None = None,
    connection: http.client.HTTPConnection | None = None,
):
    """(status, parsed JSON or text, response headers) of one request sent as written."""
    connection = connection or http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    payload = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {key}"} if key else {}),
        **(headers or {}),
    }
    connection.request(method, path, body=payload, headers=sent)
    response = connection.getresponse()
    text = response.read().decode("utf-8", "replace")
    try:
        return response.status, json.loads(text), dict(response.getheaders())
    except json.JSONDecodeError:
        return response.status, text, dict(response.getheaders())


def assert_openai_error(status: int, body, expected_status: int | None = None) -> dict:
    assert 400 <= status < 500, (status, body)
    if expected_status is not None:
        assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert (
        set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str) and error["message"]
    )
    return error


# ----------------------------------------------------------------------- 1. paths as model names
def test_a_request_cannot_name_a_directory_on_the_server(server, keys, alpha, training_file):
    stolen = str(server.home / "runs" / "run-other" / "model")
    beta = openai.OpenAI(base_url=server.base_url, api_key=keys["beta"], max_retries=0)
    for name in (stolen, "runs/run-other/model", "/etc", "../../etc", "~", str(server.home)):
        with pytest.raises(openai.NotFoundError) as refused:
            beta.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert refused.value.body["code"] == "model_not_found" and refused.value.body["param"] == "model"
        with pytest.raises(openai.NotFoundError):
            beta.completions.create(model=name, prompt="hi", max_tokens=2)
    for path in (
        "/v1/models/etc/passwd",
        "/v1/models//etc/passwd",
        f"/v1/models/{stolen}",
        "/v1/models/..%2F..%2Fetc",
    ):
        status, body, _ = raw(server, "GET", path, key=keys["beta"])
        assert_openai_error(status, body, 404)
    # Job errors read the same whether the directory exists or not: they reveal nothing of the disk.
    answers = []
    for name in (stolen, str(server.home / "runs" / "run-none" / "model")):
        with pytest.raises(openai.BadRequestError) as refused:
            alpha.fine_tuning.jobs.create(model=name, training_file=training_file.id)
        assert refused.value.body["param"] == "model"
        answers.append(refused.value.body["message"].replace(name, "NAME"))
    assert answers[0] == answers[1]


def test_the_operators_allowed_directory_and_catalog_models_still_work(server, alpha, tiny_model_dir, training_file):
    answer = alpha.chat.completions.create(
        model=str(tiny_model_dir), messages=[{"role": "user", "content": "hi"}], max_tokens=2, temperature=0
    )
    assert answer.usage.completion_tokens >= 1
    listed = [m.id for m in alpha.models.list()]
    assert str(tiny_model_dir.resolve()) in listed and "smollm2-135m-instruct" in listed
    assert str(server.home / "runs" / "run-other" / "model") not in listed
    assert alpha.models.retrieve("smollm2-135m-instruct").id == "smollm2-135m-instruct"
    job = alpha.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=training_file.id)
    assert job.status == "validating_files"
    alpha.fine_tuning.jobs.cancel(job.id)


# ------------------------------------------------------------------------------------- 2. /metrics
def test_metrics_are_for_the_operator_and_parse_as_prometheus(server, keys, alpha, tiny_model_dir):
    status, body, _ = raw(server, "GET", "/metrics")
    assert_openai_error(status, body, 401)
    status, body, _ = raw(server, "GET", "/metrics", key=keys["alpha"])
    assert_openai_error(status, body, 401)
    # Hostile label material: a path with quotes and a newline, a suffix with a quote.
    raw(server, "GET", "/v1/models/x%22%0Aforged_series%7Ba%3D%221%22%7D%201", key=keys["alpha"])
    raw(
        server,
        "POST",
        "/v1/fine_tuning/jobs",
        {"model": str(tiny_model_dir), "training_file": "file-x", "suffix": 'a"b\nforged 1'},
        key=keys["alpha"],
    )
    alpha.chat.completions.create(
        model=str(tiny_model_dir), messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    status, text, headers = raw(server, "GET", "/metrics", key=keys["operator"])
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert {"tuneforge_requests", "tuneforge_request_duration_seconds", "tuneforge_tokens"} <= set(families)
    assert families["tuneforge_request_duration_seconds"].type == "histogram"
    routes = {
        sample.labels["route"] for family in families.values() for sample in family.samples if "route" in sample.labels
    }
    assert "/v1/chat/completions" in routes and "/v1/models/{name:path}" in routes
    assert all(route.startswith("/") or route == "unmatched" for route in routes) and not any('"' in r for r in routes)
    assert "forged" not in text and "alpha" not in text and str(tiny_model_dir) not in text
    # An operator key is no project's key.
    status, body, _ = raw(server, "GET", "/v1/models", key=keys["operator"])
    assert_openai_error(status, body, 403)


# -------------------------------------------------------------------- 3. the client's faults are 4xx
def test_requests_that_cannot_be_served_are_400_with_their_param(server, alpha, tiny_model_dir, training_file):
    model = str(tiny_model_dir)
    cases = [
        (
            lambda: alpha.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=2
            ),
            "messages",
        ),
        (lambda: alpha.completions.create(model=model, prompt="word " * 3000, max_tokens=2), "prompt"),
        (
            lambda: alpha.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], stop=[""]
            ),
            "stop",
        ),
        (lambda: alpha.completions.create(model=model, prompt="", max_tokens=2), "prompt"),
        (lambda: alpha.completions.create(model=model, prompt=[], max_tokens=2), "prompt"),
        (
            lambda: alpha.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], seed=2**70
            ),
            "seed",
        ),
        (lambda: alpha.fine_tuning.jobs.create(model=model, training_file=training_file.id, seed=2**70), "seed"),
        (
            lambda: alpha.chat.completions.create(
                model=model, messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]
            ),
            "messages.0.content.0.text",
        ),
        (
            lambda: alpha.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
            ),
            "messages.0.content.0",
        ),
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.body["param"].startswith(param), (param, refused.value.body)
    assert refused.value.body["code"] == "unsupported_content"


def test_invalid_json_names_no_param(server, keys):
    status, body, _ = raw(server, "POST", "/v1/chat/completions", b'{"model": "x", "messages": [', key=keys["alpha"])
    error = assert_openai_error(status, body, 400)
    assert error["param"] is None and error["code"] == "invalid_json"


# ------------------------------------------------------------------------------------- 4. bounds
@pytest.mark.parametrize(
    "fields, param",
    [
        ({"hyperparameters": {"n_epochs": 51}}, "n_epochs"),
        ({"hyperparameters": {"batch_size": 1000}}, "batch_size"),
        ({"extra_body": {"lora_rank": 100_000}}, "lora_rank"),
        ({"extra_body": {"max_seq_length": 10**7}}, "max_seq_length"),
        ({"extra_body": {"keep_checkpoints": 1000}}, "keep_checkpoints"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"suffix": "has space"}, "suffix"),
        ({"suffix": "s" * 65}, "suffix"),
    ],
)
def test_job_bounds_name_their_field(alpha, tiny_model_dir, training_file, fields, param):
    with pytest.raises(openai.BadRequestError) as refused:
        alpha.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=training_file.id, **fields)
    assert refused.value.body["param"] == param


def test_a_suffix_like_openais_is_accepted(alpha, tiny_model_dir, training_file):
    job = alpha.fine_tuning.jobs.create(
        model=str(tiny_model_dir), training_file=training_file.id, suffix="Support_v2-" + "x" * 53
    )
    assert job.user_provided_suffix.startswith("Support_v2-")
    alpha.fine_tuning.jobs.cancel(job.id)


def test_sampling_bounds_name_their_field(alpha, tiny_model_dir):
    with pytest.raises(openai.BadRequestError) as prompts:
        alpha.completions.create(model=str(tiny_model_dir), prompt=["a"] * 33, max_tokens=1)
    assert prompts.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as choices:
        alpha.chat.completions.create(model=str(tiny_model_dir), messages=[{"role": "user", "content": "hi"}], n=9)
    assert choices.value.body["param"] == "n"


# ------------------------------------------------------------------------------- 5. work not lost
def test_a_file_a_job_needs_cannot_be_deleted(alpha, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "needed.jsonl", filler(12))
    uploaded = alpha.files.create(file=data.open("rb"), purpose="fine-tune")
    job = alpha.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id)
    with pytest.raises(openai.ConflictError) as refused:
        alpha.files.delete(uploaded.id)
    assert refused.value.body["code"] == "file_in_use" and job.id in refused.value.body["message"]
    assert alpha.files.retrieve(uploaded.id).id == uploaded.id
    alpha.fine_tuning.jobs.cancel(job.id)
    assert alpha.files.delete(uploaded.id).deleted


# ---------------------------------------------------------------------------------------- 7. uploads
def _multipart_head(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_upload_past_the_cap_is_cut_off_at_the_cap(server, keys, declared):
    """40 MB against a 1 MB cap: the 413 comes before the body is read to its end."""
    boundary, total = "tfboundary", 40 * 1024 * 1024
    head = _multipart_head(boundary)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        lines = [
            "POST /v1/files HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            f"Authorization: Bearer {keys['alpha']}",
            f"Content-Type: multipart/form-data; boundary={boundary}",
        ]
        lines.append(f"Content-Length: {len(head) + total}" if declared else "Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent, chunk, answer = 0, b"x" * (256 * 1024), b""
        sock.setblocking(False)
        while sent < total and not answer:
            piece = (head if sent == 0 else b"") + chunk
            try:
                sock.sendall(piece if declared else f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            sent += len(chunk)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                time.sleep(0.01)
        sock.setblocking(True)
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413 ") and b'"code":"file_too_large"' in answer, answer[:400]
    assert sent < 8 * 1024 * 1024, f"the server read {sent:,} bytes before refusing"
    assert not list((server.home / "files").glob("*big*"))


def test_an_upload_without_a_key_is_refused_before_its_body_is_read(server, alpha):
    """The key is checked before the form is read: the 401 comes while most of the body is still unsent
    (under the cap, so only the key can stop it), and nothing of an anonymous upload is spooled to disk."""
    boundary, total = "tfboundary", 512 * 1024
    head = _multipart_head(boundary)
    before = {f.id for f in alpha.files.list()}
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        lines = [
            "POST /v1/files HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            f"Content-Type: multipart/form-data; boundary={boundary}",
            f"Content-Length: {len(head) + total}",
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head + b"x" * 1024)
        answer = b""
        try:
            while b"invalid_api_key" not in answer and (piece := sock.recv(65536)):
                answer += piece
        except TimeoutError:
            pytest.fail(f"no answer in 10 s with the body unsent: the server waited to read it first ({answer!r})")
    assert answer.startswith(b"HTTP/1.1 401 ") and b'"code":"invalid_api_key"' in answer, answer[:400]
    form = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    status, body, _ = raw(server, "POST", "/v1/files", b"not a form", key="tf-not-a-key", headers=form)
    assert assert_openai_error(status, body, 401)["code"] == "invalid_api_key"
    assert {f.id for f in alpha.files.list()} == before


# ---------------------------------------------------------------------------------- 8. smaller ones
def test_the_home_is_readable_by_its_owner_only(server, training_file):
    assert stat.S_IMODE(os.stat(server.home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(server.home / "registry.db").st_mode) == 0o600
    stored = next((server.home / "files").glob(f"{training_file.id}*"))
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600


def test_a_file_whose_bytes_are_gone_answers_410_without_a_traceback(server, keys, alpha):
    """A file's row outlived its bytes (removed by hand, a lost disk): its content answers 410 Gone in
    OpenAI's shape, not a 500: the file is known (retrieve answers) but its content will not come back,
    so neither a 404 (a wrong id) nor a 5xx (retry) would tell the client the truth. Deleting it still works."""
    uploaded = alpha.files.create(file=("notes.txt", b"kept on disk"), purpose="user_data")
    assert alpha.files.content(uploaded.id).content == b"kept on disk"
    next((server.home / "files").glob(f"{uploaded.id}*")).unlink()
    logged = server.log.stat().st_size
    with pytest.raises(openai.APIStatusError) as gone:
        alpha.files.content(uploaded.id)
    assert gone.value.status_code == 410
    assert (gone.value.body["code"], gone.value.body["param"]) == ("file_content_missing", "file_id")
    assert uploaded.id in gone.value.body["message"] and "upload it again" in gone.value.body["message"]
    status, body, _ = raw(server, "GET", f"/v1/files/{uploaded.id}/content", key=keys["alpha"])
    assert_openai_error(status, body, 410)
    log = server.log.read_bytes()[logged:].decode("utf-8", "replace")
    assert "Traceback" not in log and "bytes are missing" in log, log
    assert alpha.files.retrieve(uploaded.id).id == uploaded.id
    assert alpha.files.delete(uploaded.id).deleted


def test_the_api_description_needs_a_key(server, keys):
    for path in ("/openapi.json", "/docs"):
        status, body, _ = raw(server, "GET", path)
        assert_openai_error(status, body, 401)
    status, description, _ = raw(server, "GET", "/openapi.json", key=keys["beta"])
    assert status == 200 and "/v1/chat/completions" in description["paths"]


def test_without_keys_only_this_machines_names_are_accepted_as_host(tmp_path):
    server = ServerProcess(tmp_path, "--no-auth", "--no-worker").start()
    try:
        status, body, _ = raw(server, "GET", "/v1/models", headers={"Host": "evil.example:80"})
        assert assert_openai_error(status, body, 400)["code"] == "invalid_host"
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
            assert raw(server, "GET", "/v1/models", headers={"Host": host})[0] == 200
        assert raw(server, "GET", "/openapi.json")[0] == 200  # no keys: the description is open too
    finally:
        server.stop()


# -------------------------------------------------------------- 3 (again). a 500 is logged, not fatal
def test_an_internal_error_is_logged_and_keeps_the_connection(tmp_path, monkeypatch):
    """A route that fails (a bug of ours, planted here) through a real uvicorn: an OpenAI-shaped 500,
    a request-log row and a Prometheus count, and the keep-alive connection goes on."""
    import threading

    import uvicorn
    from server_process import free_port

    from tuneforge.registry import access
    from tuneforge.serve.app import ServerOptions, create_app

    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    app = create_app(ServerOptions(auth=False, start_worker=False, public_metrics=True))

    @app.get("/v1/broken")
    def broken():
        raise RuntimeError("planted bug")

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        while not uv.started:
            time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        host = type("Server", (), {"port": port})
        status, body, headers = raw(host, "GET", "/v1/broken", connection=connection)
        assert status == 500 and body["error"]["type"] == "server_error" and "RuntimeError" in body["error"]["message"]
        assert headers.get("connection", "").lower() != "close"
        first_socket = connection.sock
        assert raw(host, "GET", "/v1/models", connection=connection)[0] == 200
        assert connection.sock is first_socket  # the same connection answered again
        rows = [row for row in access.request_summary() if row["route"] == "/v1/broken"]
        assert rows and rows[0]["errors"] == 1
        _, metrics, _ = raw(host, "GET", "/metrics", connection=connection)
        assert 'tuneforge_requests_total{method="GET",route="/v1/broken",status="500"} 1.0' in metrics
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


# ------------------------------------------------------------------------- the hostile list, at once
def test_a_list_of_hostile_requests_gets_no_5xx(server, keys, tiny_model_dir, training_file):
    model, alpha_key, beta_key = str(tiny_model_dir), keys["alpha"], keys["beta"]
    chat = "/v1/chat/completions"
    hostile = [
        ("GET", "/v1/models/etc/passwd", None, beta_key),
        ("GET", "/v1/models/%2e%2e/%2e%2e/etc/passwd", None, beta_key),
        ("DELETE", "/v1/models/smollm2-135m-instruct", None, alpha_key),
        ("DELETE", f"/v1/models/{server.home}/runs/run-other/model", None, beta_key),
        (
            "POST",
            chat,
            {
                "model": str(server.home / "runs" / "run-other" / "model"),
                "messages": [{"role": "user", "content": "x"}],
            },
            beta_key,
        ),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": "w " * 3000}]}, alpha_key),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": "x"}], "stop": [""]}, alpha_key),
        (
            "POST",
            chat,
            {"model": model, "messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]},
            alpha_key,
        ),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": "x"}], "seed": 2**64}, alpha_key),
        (
            "POST",
            chat,
            {"model": model, "messages": [{"role": "user", "content": [{"type": "text", "text": {"a": 1}}]}]},
            alpha_key,
        ),
        ("POST", chat, {"model": model, "messages": [{"role": "wizard", "content": "x"}]}, alpha_key),
        ("POST", chat, {"model": model, "messages": "not a list"}, alpha_key),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, alpha_key),
        (
            "POST",
            chat,
            {"model": model, "messages": [{"role": "user", "content": "x"}], "temperature": 1e308},
            alpha_key,
        ),
        ("POST", chat, {"model": model, "messages": [{"role": "user", "content": "x"}], "n": 10**6}, alpha_key),
        ("POST", chat, {"model": ["a"], "messages": []}, alpha_key),
        ("POST", chat, b"\xff\xfe not json", alpha_key),
        ("POST", chat, b"[]", alpha_key),
        ("POST", chat, b"null", alpha_key),
        ("POST", "/v1/completions", {"model": model, "prompt": ""}, alpha_key),
        ("POST", "/v1/completions", {"model": model, "prompt": ["a"] * 1000}, alpha_key),
        ("POST", "/v1/completions", {"model": model, "prompt": [1, 2, 3]}, alpha_key),
        ("POST", "/v1/completions", {"model": model, "prompt": "x", "stream": True, "n": 2}, alpha_key),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"model": model, "training_file": training_file.id, "seed": 2**70},
            alpha_key,
        ),
        ("POST", "/v1/fine_tuning/jobs", {"model": model, "training_file": training_file.id, "seed": -1}, alpha_key),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"model": model, "training_file": training_file.id, "suffix": "x/../y"},
            alpha_key,
        ),
        ("POST", "/v1/fine_tuning/jobs", {"model": "/etc", "training_file": training_file.id}, alpha_key),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"model": model, "training_file": training_file.id, "metadata": {"k": 5}},
            alpha_key,
        ),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"model": model, "training_file": training_file.id, "lora_rank": "x"},
            alpha_key,
        ),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"model": model, "training_file": training_file.id, "method": {"type": "reinforcement"}},
            alpha_key,
        ),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            {"model": model, "training_file": training_file.id, "n_epochs": 3},
            alpha_key,
        ),
        ("POST", "/v1/fine_tuning/jobs", {"model": model, "training_file": "../../etc/passwd"}, alpha_key),
        ("GET", "/v1/fine_tuning/jobs?limit=100000", None, alpha_key),
        ("GET", "/v1/fine_tuning/jobs/ftjob-nope/events?limit=-1", None, alpha_key),
        ("GET", "/v1/files?limit=0", None, alpha_key),
        ("GET", "/v1/files/..%2F..%2Fregistry.db/content", None, alpha_key),
        ("GET", f"/v1/files/{training_file.id}", None, beta_key),
        ("DELETE", f"/v1/files/{training_file.id}", None, beta_key),
        ("POST", "/v1/tuneforge/feedback", {"completion_id": "chatcmpl-x", "rating": 7}, alpha_key),
        ("POST", "/v1/fine_tuning/jobs/ftjob-nope/cancel", None, alpha_key),
        ("GET", "/v1/" + "a" * 10000, None, alpha_key),
        ("PATCH", "/v1/models", None, alpha_key),
        ("GET", "/v1/models", None, "tf-" + "x" * 5000),
        ("GET", "/metrics", None, beta_key),
        ("GET", "/docs", None, None),
    ]
    statuses = []
    for method, path, body, key in hostile:
        status, answer, _ = raw(server, method, path, body, key=key)
        statuses.append(status)
        assert status < 500, (method, path, status, answer)
        if status >= 400:
            assert_openai_error(status, answer)
    assert sum(400 <= s < 500 for s in statuses) >= len(hostile) - 3  # all but a few list calls are refusals
    # Still healthy: a real answer, and the operator's metrics parse and hold no 5xx.
    assert raw(server, "GET", "/v1/models", key=alpha_key)[0] == 200
    status, text, _ = raw(server, "GET", "/metrics", key=keys["operator"])
    samples = [s for f in text_string_to_metric_families(text) if f.name == "tuneforge_requests" for s in f.samples]
    assert samples and not any(s.labels["status"].startswith("5") for s in samples)
    with sqlite3.connect(server.home / "registry.db") as db:
        assert db.execute("select count(*) from request_log where status_code >= 500").fetchone()[0] == 0
