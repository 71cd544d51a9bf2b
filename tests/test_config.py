"""TrainConfig rejects contradictory options at load, naming both, through every view of it
(TrainConfig(...), a YAML file, the CLI); defaults, harmless combinations and a run's own record pass;
`tuneforge train`'s options have their fields' types (bools as --flag/--no-flag)."""

import os
import subprocess
import sys

import pytest
import typer
from pydantic import ValidationError

from tuneforge.errors import UsageError
from tuneforge.train import config as config_module
from tuneforge.train.config import RECORDED, TrainConfig, load_config

# (options, the field the error points at, the other field its message names)
CONTRADICTIONS = [
    ({"chunked_loss": True, "sparse_output_layer": False}, "chunked_loss", "sparse_output_layer"),
    ({"method": "full", "lora_rank": 8}, "lora_rank", "method"),
    ({"method": "full", "lora_alpha": 64}, "lora_alpha", "method"),
    ({"method": "full", "lora_dropout": 0.1}, "lora_dropout", "method"),
    ({"method": "full", "lora_target_modules": "q_proj,v_proj"}, "lora_target_modules", "method"),
    ({"method": "full", "fused_lora": True}, "fused_lora", "method"),
    ({"method": "full", "fast_lora_dropout": True}, "fast_lora_dropout", "method"),
    ({"method": "full", "frozen_weights_bf16": True}, "frozen_weights_bf16", "method"),
    ({"frozen_weights_bf16": True, "precision": "fp32"}, "frozen_weights_bf16", "precision"),
    ({"batch_size": 4, "gradient_accumulation_steps": 8}, "gradient_accumulation_steps", "batch_size"),
]
IDS = [field for _, field, _ in CONTRADICTIONS]


@pytest.mark.parametrize("options,field,other", CONTRADICTIONS, ids=IDS)
def test_a_contradiction_is_rejected_at_the_field_the_user_set_naming_both(options, field, other):
    with pytest.raises(ValidationError) as caught:
        TrainConfig(data="train.jsonl", **options)
    [error] = caught.value.errors()
    # The jobs API's `param` is the loc joined: the option to change, not an empty, model-level loc.
    assert error["loc"] == (field,)
    assert field in error["msg"] and other in error["msg"]


@pytest.mark.parametrize("options,field,other", CONTRADICTIONS, ids=IDS)
def test_a_contradiction_in_a_yaml_file_names_both_fields(tmp_path, options, field, other):
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: train.jsonl\n"
        + "".join(
            f"{name}: {str(value).lower() if isinstance(value, bool) else value}\n" for name, value in options.items()
        )
    )
    with pytest.raises(UsageError) as caught:
        load_config(path, {})
    assert f"{field}: " in caught.value.message and other in caught.value.message and str(path) in caught.value.message


def test_a_flag_contradicting_the_yaml_file_is_rejected(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: train.jsonl\nlora_rank: 8\n")
    with pytest.raises(UsageError, match="lora_rank.*method"):
        load_config(path, {"method": "full"})


def test_every_contradiction_is_reported_at_once():
    with pytest.raises(ValidationError) as caught:
        TrainConfig(data="train.jsonl", method="full", lora_rank=8, lora_alpha=64)
    assert [error["loc"] for error in caught.value.errors()] == [("lora_rank",), ("lora_alpha",)]


def test_the_cli_exits_2_with_the_message_and_no_traceback(tmp_path):
    env = {**os.environ, "TUNEFORGE_HOME": str(tmp_path), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", "--data", "X", "--method", "full", "--lora-rank", "8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "lora_rank" in result.stderr and "method is full" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("bf16", [True, False])
def test_defaults_never_contradict_themselves_nor_their_resolution(monkeypatch, method, bf16):
    monkeypatch.setattr(config_module, "bf16_is_fast", lambda device="cpu": bf16)  # auto -> bf16 here, fp32 there
    for options in (
        {},
        {"sparse_output_layer": False},
        {"precision": "fp32"},
        {"frozen_weights_bf16": method == "lora"},
        {"gradient_accumulation_steps": 8},
    ):
        resolved = TrainConfig(data="train.jsonl", method=method, **options).resolve(
            n_train_examples=20, context_length=512
        )
        assert resolved.precision == options.get("precision", "bf16" if bf16 else "fp32")
        # --resume reloads the run's record, every field given: it is taken as it ran.
        record = resolved.model_dump(mode="json")
        del record["learning_rate"]
        assert TrainConfig.model_validate(record, context=RECORDED).model_dump() == resolved.model_dump(
            exclude={"learning_rate"}
        )


@pytest.mark.parametrize(
    "options",
    [
        {
            "method": "full",
            "fused_lora": False,
            "fast_lora_dropout": False,
            "frozen_weights_bf16": False,
        },  # off, as anyway
        {"method": "full", "lora_rank": 16, "lora_dropout": 0.0},  # the defaults, said out loud
        {"sparse_output_layer": False, "chunked_loss": False},
        {"fast_lora_dropout": True, "lora_dropout": 0.0},  # nothing to fuse: the defaults themselves
        {"frozen_weights_bf16": True, "precision": "auto"},  # auto decides per machine
        {"frozen_weights_bf16": True, "precision": "bf16"},
        {"eval_every_steps": 50, "max_steps": 5},  # a smoke test on a config that validates every 50 steps
        {"early_stopping_patience": 2},  # validation.jsonl beside prepared data counts: only the run can tell
        {"batch_size": 8, "gradient_accumulation_steps": 8},
        {"batch_size": "auto", "gradient_accumulation_steps": 64},
    ],
    ids=repr,
)
def test_harmless_combinations_are_accepted(options):
    TrainConfig(data="train.jsonl", **options)


def test_an_assignment_that_contradicts_is_rejected_and_changes_nothing():
    config = TrainConfig(data="train.jsonl", chunked_loss=True)
    with pytest.raises(ValidationError, match="chunked_loss needs sparse_output_layer"):
        config.sparse_output_layer = False
    assert config.sparse_output_layer is True and "sparse_output_layer" not in config.model_fields_set
    config.chunked_loss = False
    config.sparse_output_layer = False
    assert (config.chunked_loss, config.sparse_output_layer) == (False, False)


def _config_from_cli(monkeypatch, *args: str) -> TrainConfig:
    """The TrainConfig that `tuneforge train ARGS` would train, caught before anything loads."""
    from typer.testing import CliRunner

    from tuneforge.cli import app

    loaded = {}

    def load_and_stop(path, overrides):
        loaded["config"] = load_config(path, overrides)
        raise typer.Exit(0)

    monkeypatch.setattr(config_module, "load_config", load_and_stop)
    result = CliRunner().invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return loaded["config"]


def test_no_flag_reaches_the_config_as_false_and_absent_flags_keep_the_yaml_values(monkeypatch, tmp_path):
    config = _config_from_cli(
        monkeypatch, "--data", "train.jsonl", "--no-padding-free", "--lora-rank", "8", "--n-epochs", "2"
    )
    assert config.padding_free is False and config.lora_rank == 8 and config.n_epochs == 2
    assert {
        "padding_free",
        "lora_rank",
        "n_epochs",
    } <= config.model_fields_set and "chunked_loss" not in config.model_fields_set
    path = tmp_path / "run.yaml"
    path.write_text("data: train.jsonl\npadding_free: false\ncache_tokens: false\n")
    config = _config_from_cli(monkeypatch, "--config", str(path), "--cache-tokens")
    assert config.padding_free is False and config.cache_tokens is True


def test_train_help_shows_each_field_with_its_type():
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
        timeout=120,
    )
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ --")}
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            assert f"--no-{flag[2:]}" in lines[flag] and "<bool>" in lines[flag]
        else:
            assert "<bool>" not in lines[flag]
    assert "<int>" in lines["--lora-rank"] and "<float>" in lines["--warmup-ratio"] and "<path>" in lines["--data"]
    assert "<int|auto>" in lines["--n-epochs"] and "<float|auto>" in lines["--learning-rate-multiplier"]
    assert "<lora|full>" in lines["--method"] and "<auto|fp32|bf16>" in lines["--precision"]


def test_device_is_checked_by_name_then_against_this_machine():
    import torch

    with pytest.raises(ValidationError) as error:
        TrainConfig(data="train.jsonl", device="gpu")
    assert error.value.errors()[0]["loc"] == ("device",)
    for name in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert TrainConfig(data="train.jsonl", device=name).device == name
    resolved = TrainConfig(data="train.jsonl").resolve(n_train_examples=20, context_length=512)
    assert resolved.device == ("cuda" if torch.cuda.is_available() else "cpu")  # auto, as it ran: recorded
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="device cuda:1: PyTorch sees no CUDA GPU"):
            TrainConfig(data="train.jsonl", device="cuda:1").resolve(n_train_examples=20, context_length=512)


def test_qlora_is_lora_only():
    with pytest.raises(ValidationError) as error:
        TrainConfig(data="train.jsonl", method="full", load_in_4bit=True)
    assert error.value.errors()[0]["loc"] == ("load_in_4bit",)
    assert "only applies to LoRA" in str(error.value)
