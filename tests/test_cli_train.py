"""The training stage through the real CLI on a tiny model: train, runs list/show/rm, chat, generate, export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import chat, write_jsonl

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]


def tuneforge(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120", "TUNEFORGE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One LoRA run through `tuneforge train`, shared by the tests below."""
    home = tmp_path_factory.mktemp("cli-home")
    data = write_jsonl(home / "train.jsonl", [chat(f"Say hi as the {a}", "hello there friend") for a in ANIMALS])
    config = home / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata: {data}\nn_epochs: 2\nbatch_size: 4\nsuffix: animals\n")
    result = tuneforge(home, "train", "--config", str(config), "--learning-rate-multiplier", "5", "--precision", "fp32")
    assert result.returncode == 0, result.stderr + result.stdout
    runs = json.loads(tuneforge(home, "runs", "list", "--json").stdout)
    return home, runs[0], data


def test_train_records_the_run_with_yaml_values_and_flag_overrides(trained):
    home, run, _ = trained
    assert run["status"] == "succeeded" and run["method"] == "lora"
    shown = json.loads(tuneforge(home, "runs", "show", run["id"]).stdout)
    assert shown["config"]["suffix"] == "animals" and shown["config"]["learning_rate_multiplier"] == 5
    assert shown["config"]["n_epochs"] == 2 and shown["models"][0].endswith(f":animals:{run['id']}")
    assert Path(shown["run_dir"], "adapter", "adapter_model.safetensors").exists()


def test_models_list_includes_the_tuned_model(trained):
    home, run, _ = trained
    names = [row["name"] for row in json.loads(tuneforge(home, "models", "list", "--json").stdout)]
    assert any(name.startswith("ft:") and name.endswith(run["id"]) for name in names)


def test_chat_one_shot_answers(trained):
    home, run, _ = trained
    result = tuneforge(home, "chat", run["id"], "Say hi as the cat", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_chat_and_generate_take_int8_weights(trained, tmp_path):
    home, run, data = trained
    result = tuneforge(home, "chat", run["id"], "Say hi as the cat", "--max-tokens", "8", "--precision", "int8")
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    out = tmp_path / "int8.jsonl"
    result = tuneforge(home, "generate", run["id"], "--data", str(data), "--out", str(out), "--max-tokens", "4", "--precision", "int8")
    assert result.returncode == 0 and len(out.read_text().splitlines()) == 12, result.stderr


def test_cli_precisions_are_the_engines():
    from tuneforge.cli.common import PRECISION_CHOICES
    from tuneforge.inference.fast_llama import PRECISIONS

    assert PRECISION_CHOICES == PRECISIONS


def test_interactive_chat_reads_turns_until_an_empty_line(trained):
    home, run, _ = trained
    env = {**os.environ, "TUNEFORGE_HOME": str(home)}
    result = subprocess.run([sys.executable, "-m", "tuneforge", "chat", run["id"], "--max-tokens", "4"],
                            input="Say hi as the cat\nAnd as the dog?\n\n", capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("you>") == 3  # two questions answered, then the empty line ends the chat


def test_ctrl_c_saves_a_checkpoint_and_marks_the_run_resumable(tmp_path, tiny_model_dir):
    import signal
    import time

    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"Say hi as the {a}", "hello") for a in ANIMALS])
    env = {**os.environ, "TUNEFORGE_HOME": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "tuneforge", "train", "--model", str(tiny_model_dir), "--data", str(data),
                                "--n-epochs", "50", "--batch-size", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    runs = tmp_path / "runs"

    def steps_done() -> int:  # rows after the header: the training loop (and its signal handler) is running
        return max((len(p.read_text().splitlines()) - 1 for p in runs.glob("*/metrics.csv")), default=0)

    deadline = time.time() + 120
    while time.time() < deadline and steps_done() < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    [run_dir] = runs.iterdir()
    assert any((p / "COMPLETE").exists() for p in (run_dir / "checkpoints").iterdir())
    assert json.loads(tuneforge(tmp_path, "runs", "show", run_dir.name).stdout)["status"] == "interrupted"


def test_generate_writes_one_line_per_example(trained, tmp_path):
    home, run, data = trained
    out = tmp_path / "generations.jsonl"
    result = tuneforge(home, "generate", run["id"], "--data", str(data), "--out", str(out), "--max-tokens", "6")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["reference"] == "hello there friend" and "generation" in rows[0]


def test_export_merged_loads_with_plain_transformers(trained, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    home, run, _ = trained
    result = tuneforge(home, "export", run["id"], "--merged", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template
    assert not any("lora" in name for name, _ in model.named_parameters())


@pytest.mark.parametrize("args,message", [
    (("train",), "--data"),
    (("train", "--data", "nowhere.jsonl"), "no such file"),
    (("train", "--data", "x.jsonl", "--n-epochs", "zero"), "n_epochs"),
    (("train", "--data", "x.jsonl", "--prompt-loss-weight", "2"), "prompt_loss_weight"),
    (("train", "--resume", "run-missing"), "no run"),
    (("chat", "ft:nothing:here::run-0", "hi"), "no tuned model"),
    (("chat", "ft:nothing:here::run-0", "hi", "--precision", "int4"), "not one of auto, fp32, bf16, int8"),
    (("serve", "--precision", "fp16"), "not one of auto, fp32, bf16, int8"),
    (("eval", "ft:nothing:here::run-0", "--data", "x.jsonl", "--precision", "fp16"), "not one of auto, fp32, bf16, int8"),
])
def test_training_usage_errors_are_clear(tmp_path, args, message):
    result = tuneforge(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_runs_rm_deletes_row_and_directory(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"Say hi as the {a}", "hello") for a in ANIMALS])
    assert tuneforge(tmp_path, "train", "--model", str(tiny_model_dir), "--data", str(data), "--n-epochs", "1").returncode == 0
    [run] = json.loads(tuneforge(tmp_path, "runs", "list", "--json").stdout)
    run_dir = Path(json.loads(tuneforge(tmp_path, "runs", "show", run["id"]).stdout)["run_dir"])
    assert tuneforge(tmp_path, "runs", "rm", run["id"]).returncode == 0
    assert not run_dir.exists() and json.loads(tuneforge(tmp_path, "runs", "list", "--json").stdout) == []


def test_eval_compares_a_run_with_its_base_model_by_default(trained, tmp_path):
    home, run, data = trained
    result = tuneforge(home, "eval", run["id"], "--data", str(data), "--max-examples", "4", "--max-tokens", "3",
                       "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["against"] == run["base_model"] and results["examples"] == 4
    assert set(results["comparison"]) == set(results["metrics"])
    assert "| rouge_l |" in result.stdout
    shown = json.loads(tuneforge(home, "runs", "show", run["id"]).stdout)
    assert shown["evaluations"][0]["report_dir"] == str((tmp_path / "eval").resolve())


def test_eval_takes_the_engines_precision(trained, tmp_path):
    home, run, data = trained
    result = tuneforge(home, "eval", run["id"], "--data", str(data), "--max-examples", "2", "--max-tokens", "2",
                       "--against", "none", "--no-probes", "--precision", "int8", "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["decoding"]["precision"] == "int8" and results["scores"]["model"]["precision"] == "int8"


def test_quickstart_before_after_panels_show_both_models(trained, tiny_model_dir, monkeypatch):
    from rich.console import Console

    from tuneforge.quickstart import show_before_after

    home, run, data = trained
    monkeypatch.setenv("TUNEFORGE_HOME", str(home))
    console = Console(record=True, width=100)
    show_before_after(console, data, run["id"], base_model=str(tiny_model_dir), max_new_tokens=3)
    text = console.export_text()
    assert text.count("before (base model)") == 3 and text.count("after (tuned)") == 3
    assert "Say hi as the cat" in text
