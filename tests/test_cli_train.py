"""The training stage through the real CLI on a tiny model: train, runs list/show/rm, chat, generate, export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import chat, write_jsonl

from tuneforge.data.examples import Message

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "ant", "bat", "cod", "eel", "yak", "emu"]


def tuneforge(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120", "TUNEFORGE_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, env=env, timeout=300
    )


def unwrapped(text: str) -> str:
    """`text` without whitespace: the console wraps long lines (paths) wherever they reach its width."""
    return "".join(text.split())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One LoRA run through `tuneforge train`, shared by the tests below."""
    home = tmp_path_factory.mktemp("cli-home")
    data = write_jsonl(home / "train.jsonl", [chat(f"Say hi as the {a}", "hello there friend") for a in ANIMALS])
    config = home / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndata: {data}\nn_epochs: 2\nbatch_size: 4\nsuffix: animals\n")
    result = tuneforge(
        home, "train", "--config", str(config), "--learning-rate-multiplier", "5", "--precision", "fp32"
    )
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


TAUGHT = "hello there friend"  # every training example's answer: what the tuned model says, greedy


def test_chat_one_shot_answers(trained):
    home, run, _ = trained
    result = tuneforge(home, "chat", run["id"], "Say hi as the cat", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{TAUGHT}\n"


# `python -m tuneforge` with PackedLlama watched: at exit, stderr gets "packed:" and the dtype of each
# packing's output-layer weight, so a test sees which weights the command decoded with.
WATCH_PACKING = """
import atexit, sys
from tuneforge.inference import fast_llama
packed, init = [], fast_llama.PackedLlama.__init__
def watched(self, model, precision="fp32"):
    init(self, model, precision)
    packed.append(str((self.lm_head[0] if isinstance(self.lm_head, tuple) else self.lm_head).dtype))
fast_llama.PackedLlama.__init__ = watched
atexit.register(lambda: print("packed:", *packed, file=sys.stderr))
from tuneforge.cli import main
main()
"""


def test_chat_and_generate_take_int8_weights(trained, tmp_path):
    home, run, data = trained
    env = {**os.environ, "COLUMNS": "120", "TUNEFORGE_HOME": str(home)}

    def watched(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", WATCH_PACKING, *args], capture_output=True, text=True, env=env, timeout=300
        )

    def packed(stderr: str) -> list[str]:
        return next(line.split()[1:] for line in stderr.splitlines() if line.startswith("packed:"))

    result = watched("chat", run["id"], "Say hi as the cat", "--max-tokens", "8", "--precision", "int8")
    assert result.returncode == 0 and result.stdout == f"{TAUGHT}\n", result.stderr
    assert packed(result.stderr) == ["torch.int8"]
    out = tmp_path / "int8.jsonl"
    result = watched(
        "generate", run["id"], "--data", str(data), "--out", str(out), "--max-tokens", "4", "--precision", "int8"
    )
    assert result.returncode == 0, result.stderr
    assert packed(result.stderr) == ["torch.int8"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["generation"], row["finish_reason"]) for row in rows] == [(TAUGHT, "stop")] * 12


def test_cli_precisions_are_the_engines():
    from tuneforge.cli.common import PRECISION_CHOICES
    from tuneforge.inference.fast_llama import PRECISIONS

    assert PRECISION_CHOICES == PRECISIONS


def test_interactive_chat_reads_turns_until_an_empty_line(trained, monkeypatch):
    home, run, _ = trained
    env = {**os.environ, "TUNEFORGE_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", run["id"], "--max-tokens", "4"],
        input="Say hi as the cat\nAnd as the dog?\n\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # Two questions answered, the second after the first exchange, then the empty line ends the chat.
    from tuneforge.runs.models import engine as engine_for

    monkeypatch.setenv("TUNEFORGE_HOME", str(home))  # the registry that knows the run
    engine = engine_for(run["id"])  # what `tuneforge chat` builds, in this process
    first = [Message("user", "Say hi as the cat")]
    [answer] = engine.generate([first], max_new_tokens=4)
    history = first + [Message("assistant", answer.text), Message("user", "And as the dog?")]
    [second] = engine.generate([history], max_new_tokens=4)
    assert answer.text == TAUGHT
    assert result.stdout == f"you> {answer.text}\nyou> {second.text}\nyou> "


def test_ctrl_c_saves_a_checkpoint_and_marks_the_run_resumable(tmp_path, tiny_model_dir):
    import signal
    import time

    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"Say hi as the {a}", "hello") for a in ANIMALS])
    env = {**os.environ, "TUNEFORGE_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuneforge",
            "train",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--n-epochs",
            "50",
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
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
    assert unwrapped(result.stdout) == unwrapped(f"wrote 12 generations to {out}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {
            "line": line,
            "messages": [{"role": "user", "content": f"Say hi as the {animal}"}],
            "reference": TAUGHT,
            "generation": TAUGHT,
            "finish_reason": "stop",
        }
        for line, animal in enumerate(ANIMALS, start=1)
    ]


def test_export_merged_loads_with_plain_transformers(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    home, run, _ = trained
    result = tuneforge(home, "export", run["id"], "--merged", str(tmp_path / "merged"))
    assert result.returncode == 0, result.stderr
    assert unwrapped(f"merged weights written to {tmp_path / 'merged'}") in unwrapped(result.stdout)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").chat_template
    assert not any("lora" in name for name, _ in model.named_parameters())
    # The merged weights compute what the base with the run's adapter computes, and not what the base does.
    base = AutoModelForCausalLM.from_pretrained(run["base_model"]).eval()
    with torch.no_grad():
        ids = torch.tensor([AutoTokenizer.from_pretrained(tmp_path / "merged")("Say hi as the cat").input_ids])
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, home / "runs" / run["id"] / "adapter").eval()
        assert torch.allclose(model(ids).logits, adapted(ids).logits, atol=1e-4)
        assert not torch.allclose(model(ids).logits, base_logits, atol=1e-2)


def test_export_gguf_reloads_and_answers_as_the_merged_model(trained, tmp_path, monkeypatch):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.runs.models import export_gguf, export_merged

    home, run, _ = trained
    # The CLI's `export --merged` has its own test; here in this process, which saves a start (seconds).
    monkeypatch.setenv("TUNEFORGE_HOME", str(home))
    export_merged(run["id"], tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Say hi as the {animal}"}], add_generation_prompt=True, tokenize=False
        )
        for animal in ANIMALS[:10]
    ]
    with torch.no_grad():
        expected = [
            merged.generate(tokenizer(p, return_tensors="pt").input_ids, max_new_tokens=6, do_sample=False)
            for p in prompts
        ]
    # f16 through the CLI, reloaded by transformers (its GGUF reader is slow: ~9 s a load, once).
    target = tmp_path / "model-f16.gguf"
    result = tuneforge(home, "export", run["id"], "--gguf", str(target), "--dtype", "f16")
    assert result.returncode == 0, result.stderr
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=target.name, dtype=torch.float32).eval()
    f16 = gguf.GGUFReader(target)
    assert f16.fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert f16.fields["general.architecture"].contents() == "llama"
    gguf_tokenizer = AutoTokenizer.from_pretrained(tmp_path, gguf_file=target.name)
    assert gguf_tokenizer.chat_template == tokenizer.chat_template
    for prompt, answer in zip(prompts, expected):
        ids = gguf_tokenizer(prompt, return_tensors="pt").input_ids
        assert ids.tolist() == tokenizer(prompt, return_tensors="pt").input_ids.tolist()
        with torch.no_grad():  # the merged model's greedy answer, from the GGUF weights
            assert reloaded.generate(ids, max_new_tokens=6, do_sample=False).tolist() == answer.tolist()

    # q8_0: the same metadata and tokenizer, and every tensor the f16 file's to within 8-bit rounding.
    export_gguf(run["id"], tmp_path / "model-q8_0.gguf", "q8_0")
    q8 = gguf.GGUFReader(tmp_path / "model-q8_0.gguf")
    assert {n: f.contents() for n, f in q8.fields.items() if n.startswith(("tokenizer.", "llama."))} == {
        n: f.contents() for n, f in f16.fields.items() if n.startswith(("tokenizer.", "llama."))
    }
    halves = {tensor.name: tensor for tensor in f16.tensors}
    assert sorted(halves) == sorted(tensor.name for tensor in q8.tensors)
    for tensor in q8.tensors:
        reference = gguf.quants.dequantize(halves[tensor.name].data, halves[tensor.name].tensor_type)
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        if tensor.name.endswith("_norm.weight"):
            assert tensor.tensor_type == gguf.GGMLQuantizationType.F32 and (values == reference).all()
        else:
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0, tensor.name
            scale = np.abs(reference).max(axis=-1, keepdims=True)
            assert (np.abs(values - reference) <= scale / 127 + 1e-3).all(), tensor.name


@pytest.mark.parametrize(
    "args,message",
    [
        (("train",), "--data"),
        (("train", "--data", "nowhere.jsonl"), "no such file"),
        (("train", "--data", "x.jsonl", "--n-epochs", "zero"), "n_epochs"),
        (("train", "--data", "x.jsonl", "--prompt-loss-weight", "2"), "prompt_loss_weight"),
        (("train", "--resume", "run-missing"), "no run"),
        (("chat", "ft:nothing:here::run-0", "hi"), "no tuned model"),
        (("chat", "ft:nothing:here::run-0", "hi", "--precision", "int4"), "not one of auto, fp32, bf16, int8"),
        (("serve", "--precision", "fp16"), "not one of auto, fp32, bf16, int8"),
        (
            ("eval", "ft:nothing:here::run-0", "--data", "x.jsonl", "--precision", "fp16"),
            "not one of auto, fp32, bf16, int8",
        ),
    ],
)
def test_training_usage_errors_are_clear(tmp_path, args, message):
    result = tuneforge(tmp_path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_runs_rm_deletes_row_and_directory(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"Say hi as the {a}", "hello") for a in ANIMALS])
    assert (
        tuneforge(tmp_path, "train", "--model", str(tiny_model_dir), "--data", str(data), "--n-epochs", "1").returncode
        == 0
    )
    [run] = json.loads(tuneforge(tmp_path, "runs", "list", "--json").stdout)
    run_dir = Path(json.loads(tuneforge(tmp_path, "runs", "show", run["id"]).stdout)["run_dir"])
    assert tuneforge(tmp_path, "runs", "rm", run["id"]).returncode == 0
    assert not run_dir.exists() and json.loads(tuneforge(tmp_path, "runs", "list", "--json").stdout) == []


def test_eval_compares_a_run_with_its_base_model_by_default(trained, tmp_path):
    home, run, data = trained
    result = tuneforge(
        home,
        "eval",
        run["id"],
        "--data",
        str(data),
        "--max-examples",
        "4",
        "--max-tokens",
        "3",
        "--out",
        str(tmp_path / "eval"),
    )
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["against"] == run["base_model"] and results["examples"] == 4
    assert set(results["comparison"]) == set(results["metrics"])
    assert "| rouge_l |" in result.stdout
    shown = json.loads(tuneforge(home, "runs", "show", run["id"]).stdout)
    assert shown["evaluations"][0]["report_dir"] == str((tmp_path / "eval").resolve())


def test_eval_takes_the_engines_precision(trained, tmp_path):
    home, run, data = trained
    result = tuneforge(
        home,
        "eval",
        run["id"],
        "--data",
        str(data),
        "--max-examples",
        "2",
        "--max-tokens",
        "2",
        "--against",
        "none",
        "--no-probes",
        "--precision",
        "int8",
        "--out",
        str(tmp_path / "eval"),
    )
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
