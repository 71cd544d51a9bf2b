"""The real `tuneforge` command, run as a subprocess: exit codes, JSON output, no tracebacks."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import filler, write_jsonl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BROKEN = EXAMPLES / "broken"


def tuneforge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_check_clean_file_exits_zero_with_token_statistics():
    result = tuneforge("data", "check", str(EXAMPLES / "support_chat.jsonl"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["format"] == "openai_chat" and report["examples"] == 320
    assert set(report) >= {"ok", "format", "examples", "findings", "stats"}
    assert report["stats"]["tokens_per_example"]["max"] >= report["stats"]["tokens_per_example"]["p95"]
    assert 0 < report["stats"]["trainable_tokens"] < report["stats"]["total_tokens"]
    histogram = report["stats"]["token_histogram"]  # what the dashboard draws: every example in one bin
    assert sum(b["count"] for b in histogram) == 320 and len(histogram) <= 20
    assert histogram[0]["from"] == report["stats"]["tokens_per_example"]["min"]
    assert histogram[-1]["to"] == report["stats"]["tokens_per_example"]["max"] + 1


def test_check_file_with_errors_exits_one_and_names_line_and_field(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", filler(12) + [{"messages": [{"role": "human", "content": "hi"}]}])
    result = tuneforge("data", "check", str(source), "--json", "--model", "none")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    finding = next(f for f in report["findings"] if f["code"] == "unknown_role")
    assert (finding["line"], finding["field"], finding["severity"]) == (13, "messages[0].role", "error")
    assert "user" in finding["fix"]


def test_check_tables_name_the_problem_for_people(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", filler(12) + ["{oops"])
    result = tuneforge("data", "check", str(source), "--model", "none")
    assert result.returncode == 1
    assert "invalid_json" in result.stdout and "line 13" in result.stdout and "fix:" in result.stdout


USAGE_ERRORS = [  # (arguments, what stderr must say)
    (("data", "check", "does-not-exist.jsonl"), "error: does-not-exist.jsonl: no such file"),
    (("data", "check", "."), "error: .: unsupported file type"),
    (("data", "check", "data.parquet"), "error: data.parquet: unsupported file type '.parquet'\nfix: Use .jsonl"),
    (
        ("data", "prepare", "x.jsonl", "--out", "o", "--split", "0.5,0.6"),
        "error: --split '0.5,0.6': need train,validation",
    ),
    (("models", "show", "no-such-model"), "error: unknown model 'no-such-model'\nfix: Use a catalog name"),
    (("data", "check"), "Missing argument 'file'"),
    (("chat", "m", "--device", "gpu"), "'--device': 'gpu' is not one of auto, cpu, cuda, cuda:N, mps"),
]


@pytest.mark.parametrize("args,message", USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS])
def test_usage_errors_exit_two_without_traceback(tmp_path, args, message):
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    (tmp_path / "x.jsonl").write_text("{}\n")
    result = tuneforge(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", sorted(p.name for p in BROKEN.iterdir()))
def test_broken_example_files_fail_with_findings_not_tracebacks(name):
    result = tuneforge("data", "check", str(BROKEN / name), "--json", "--model", "none")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] > 0 and "Traceback" not in result.stderr


def test_binary_garbage_is_reported_line_by_line(tmp_path):
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(bytes(range(256)) * 40)
    result = tuneforge("data", "check", str(path), "--json", "--model", "none")
    assert result.returncode == 1
    assert json.loads(result.stdout)["finding_counts"]["not_utf8"] >= 1


def test_prepare_then_verify(tmp_path):
    out = tmp_path / "prepared"
    result = tuneforge("data", "prepare", str(EXAMPLES / "ticket_classifier.jsonl"), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest == json.loads((out / "manifest.json").read_text())
    outputs = manifest["outputs"]
    assert [outputs[split]["examples"] for split in ("train", "validation", "test")] == [270, 15, 15]
    for split, written in outputs.items():  # the files hold what the manifest says
        data = (out / written["file"]).read_bytes()
        assert len(data.splitlines()) == written["examples"] and len(data) == written["bytes"]
        assert hashlib.sha256(data).hexdigest() == written["sha256"], split
    verify = tuneforge("data", "verify", str(out))
    assert verify.returncode == 0 and "every file matches manifest.json" in " ".join(verify.stdout.split())
    (out / "train.jsonl").write_text("tampered\n")
    verify = tuneforge("data", "verify", str(out))
    assert verify.returncode == 1 and "train.jsonl" in verify.stdout


def test_prepare_refuses_data_with_errors(tmp_path):
    source = write_jsonl(tmp_path / "bad.jsonl", filler(12) + ["{oops"])
    result = tuneforge("data", "prepare", str(source), "--out", str(tmp_path / "out"), "--model", "none")
    assert result.returncode == 1
    assert "--drop-invalid" in result.stderr and not (tmp_path / "out").exists()


def test_models_list_shows_the_bundled_model():
    result = tuneforge("models", "list", "--json")
    assert result.returncode == 0
    names = {row["name"]: row for row in json.loads(result.stdout)}
    assert names["smollm2-135m-instruct"]["source"] == "bundled"
    assert names["smollm2-135m-instruct"]["license"] == "Apache-2.0"


def test_models_show_reads_facts_from_the_config():
    result = tuneforge("models", "show", "smollm2-135m-instruct")
    assert result.returncode == 0, result.stderr
    assert "134.5 M parameters" in result.stdout and "context 8192" in result.stdout


@pytest.mark.parametrize("command", ["chat", "generate", "eval", "serve"])
def test_a_device_that_is_not_here_exits_two_naming_it(command, tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    data = str(EXAMPLES / "support_chat.jsonl")
    args = {
        "chat": ("chat", str(tiny_model_dir), "hi"),
        "generate": ("generate", str(tiny_model_dir), "--data", data, "--out", str(tmp_path / "out.jsonl")),
        "eval": ("eval", str(tiny_model_dir), "--data", data, "--out", str(tmp_path / "eval")),
        "serve": ("serve", "--no-worker", "--port", "1"),  # fails before it would listen
    }[command]
    result = tuneforge(*args, "--device", "cuda", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert "error: device cuda: PyTorch sees no CUDA GPU" in result.stderr, result.stderr
    assert "fix: Use device auto or cpu" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
