"""`TrainConfig`: one typed, validated config per run. CLI flags, YAML files and the jobs API are views of it.

Each field's description is its help text (`tuneforge train --help` shows them). Fields that accept
"auto" are resolved against the dataset by `resolve`, and the resolved config is what the run
directory records (`config.json`), so a run can always be repeated exactly.
"""

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from tuneforge.errors import UsageError
from tuneforge.hardware import DEVICE_PATTERN, auto_epochs, bf16_is_fast, device_type, resolve_device

Auto = Literal["auto"]
# Peak learning rate at multiplier 1.0, per method: OpenAI's multiplier scales a base rate the same way.
BASE_LEARNING_RATE = {"lora": 2e-3, "full": 1e-4}
AUTO_PATIENCE = 2  # validations without improvement: one epoch at the automatic two validations an epoch
RECORDED = {"recorded": True}  # validation context of a run's own record: see _no_contradictions
MAXIMA = {"n_epochs": 50, "batch_size": 256, "max_seq_length": 131_072}
# Auto batch size: tokens one optimiser step should hold for the device to run near its speed. CPU:
# measured on the 2-core reference (LoRA, bundled model, ~66-token examples): 262 tokens a step ran
# at 306 tok/s, 525 at 390, 1,050 at 555, 2,109 at 577: it levels off near 2,000. CUDA and MPS: not
# measured (no GPU was lent); a GPU needs more tokens in flight than a CPU to fill its units.
TOKENS_PER_STEP = {"cpu": 2048, "cuda": 8192, "mps": 4096}
# Past 16 the reference machine's speed gains little (~1,050 tokens a step ran at 555 tok/s, ~2,100 at
# 577) while a run takes half the steps: on benchmarks/outcome.py's short answers, batch 16 reached
# validation loss 0.0328 where batch 32 (the same learning rate per example) stopped at 0.0454.
AUTO_BATCH_RANGE = (4, 16)
MIN_AUTO_STEPS = 100  # optimiser steps a run keeps at least: warmup, validations and early stopping need them
# The auto learning rate grows linearly with the batch, from the rate chosen at batch 4 (where the
# auto multiplier 0.1 was tuned): a batch of 8x the examples takes 1/8 of the steps, and each Adam
# step moves the weights about as far whatever the batch. Measured (benchmarks/outcome.py, short
# answers, batch 32): the square-root rule (Malladi et al. 2022) left the run undertrained, exact
# match 0.787 against 0.933 at batch 4; the linear rule, 0.947 (batch 32) and 0.920 (batch 16); linear
# to 16 then square root, 0.867. Figures and their forgetting: benchmarks/RESULTS.md.
AUTO_MULTIPLIER, AUTO_MULTIPLIER_BATCH = 0.1, 4
# DPO's auto learning rate: a tenth of SFT's. Its loss pushes two replies apart with no floor, so
# SFT's rate overshoots (TRL's DPO default, 1e-6 for full weights, is a hundredth of its SFT one).
DPO_RATE_SHARE = 0.1
TRACKERS = ("tensorboard", "wandb", "mlflow")
AUTO_DPO_BETA = 0.1  # TRL's and OpenAI's default
# What only LoRA uses: the adapters' shape, and the switches of how LoRA runs.
LORA_SETTINGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")
LORA_SWITCHES = ("fused_lora", "fast_lora_dropout", "frozen_weights_bf16", "load_in_4bit")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train, on what.
    model: str = Field(
        "smollm2-135m-instruct", description="Base model: catalog name, local model directory or hub id."
    )
    data: Path = Field(
        ...,
        description="Training data: a directory from `tuneforge data prepare` (train/validation.jsonl) or a "
        "JSONL file.",
    )
    validation_data: Path | None = Field(
        None, description="Validation JSONL; default: validation.jsonl beside the training data, if any."
    )
    validation_split: float = Field(
        0.1,
        ge=0.0,
        le=0.5,
        description=(
            "Without validation data: the share of the training file held out to validate on (seeded, stratified "
            "by reply for classification-like data; 8 to 200 examples; none for files under 50 examples). "
            "0 turns it off."
        ),
    )
    method: Literal["lora", "full"] = Field(
        "lora", description="lora: train small adapter matrices (fast, small files); full: train every weight."
    )
    continued_from: str | None = Field(
        None,
        description=(
            "Set by Tuneforge when --model names a tuned model or run: that run's id (its weights are where this "
            "run starts; runs/continuation.py)."
        ),
    )
    objective: Literal["sft", "dpo"] = Field(
        "sft",
        description=(
            "What the run learns from: sft, the replies in chat (or text) examples; dpo, preference pairs (a "
            "preferred and a non-preferred reply to one prompt: direct preference optimisation, OpenAI's method "
            "type dpo), with lora or full alike."
        ),
    )
    dpo_beta: float | Auto = Field(
        "auto",
        description=(
            "DPO only: how far the tuned model may move from the one it starts from (lower: further); auto: 0.1."
        ),
    )
    suffix: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]*$",
        description=(
            "A name for the tuned model, like OpenAI's suffix (ft:<base>:<suffix>:<id>): up to 64 letters, digits, "
            "'-' and '_'."
        ),
    )

    # The controls users know from hosted fine-tuning.
    n_epochs: int | Auto = Field(
        "auto", description="Passes over the training data; auto: 3, more for tiny datasets, fewer for huge ones."
    )
    batch_size: int | Auto = Field(
        "auto",
        description=(
            "Examples per optimiser step; auto: enough examples for ~2,048 tokens a step on a CPU (8,192 on "
            "a GPU), a power of two between 4 and 32, smaller where the run would take under 100 steps."
        ),
    )
    learning_rate_multiplier: float | Auto = Field(
        "auto",
        description=(
            "Scales the method's base learning rate (lora 2e-3, full 1e-4); auto: 0.1 x batch_size / 4 "
            "(0.1 at batch 4, 0.8 at 32; DPO a tenth of that)."
        ),
    )
    prompt_loss_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Loss weight of prompt tokens: 0 learns only the assistant's replies; weight-0 turns never count.",
    )

    # Optimiser and schedule.
    warmup_ratio: float = Field(
        0.05, ge=0.0, lt=1.0, description="Share of steps spent warming the learning rate up from 0."
    )
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Learning-rate decay after warm-up."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Micro-batches summed per optimiser step (same result, less memory)."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    max_seq_length: int | Auto = Field(
        "auto", description="Tokens per example before truncation; auto: the model's context, at most 2048."
    )
    seed: int = Field(
        42, ge=0, le=2**31 - 1, description="Seed for data order, initialisation and dropout: same seed, same run."
    )

    # Where it runs.
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="cpu, cuda, cuda:N or mps; auto: a CUDA GPU where PyTorch sees one, else the CPU.",
    )
    nproc: int = Field(
        1,
        ge=1,
        le=1024,
        description=(
            "Training processes on this machine (torchrun): one per GPU, or a few on a CPU. LoRA runs them as "
            "DDP, full fine-tuning shards the model with FSDP2; the batch is split between them, so the result "
            "is the one-process run's."
        ),
    )

    # Speed (each gives the same result as the plain path, to within bf16 rounding for precision).
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description=(
            "Matmul precision: bf16 autocast keeps fp32 master weights; auto picks bf16 where the hardware runs it "
            "natively."
        ),
    )
    sparse_output_layer: bool = Field(
        True, description="Compute the output layer and softmax only on tokens that carry loss weight."
    )
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together, so less compute goes to padding."
    )
    padding_free: bool = Field(
        True,
        description="Lay each batch's examples end to end in one row, each attending only to itself: no "
        "compute on padding.",
    )
    chunked_loss: bool = Field(
        True,
        description=(
            "With sparse_output_layer: output layer and loss a chunk of tokens at a time, gradients in the same "
            "pass, never the whole vocabulary-wide logits."
        ),
    )
    fast_lora_dropout: bool = Field(
        True,
        description=(
            "LoRA dropout fused into the adapter's first matmul, its mask drawn again in backward instead of stored "
            "(same dropout, less time and memory)."
        ),
    )
    fused_lora: bool = Field(
        True,
        description=(
            "Each LoRA layer's frozen matmul and adapter in one function, the adapter's output accumulated by the "
            "matmul itself (same result, fewer passes over memory)."
        ),
    )
    lean_activations: bool = Field(
        True,
        description=(
            "Llama-style norms and MLPs keep less for backward (the norm's input instead of its fp32 copy; the MLP's "
            "gate and up, not silu(gate)): same result, less memory."
        ),
    )
    frozen_weights_bf16: bool = Field(
        True,
        description=(
            "With LoRA in bf16: store the frozen base weights in bf16 (LoRA weights stay fp32) instead of casting "
            "them on every pass; embeddings and norms are then bf16 too, a small further rounding."
        ),
    )
    shared_prefix: bool = Field(
        True,
        description=(
            "On a CPU, when a padding-free batch's examples start with the same tokens (chat template, system "
            "prompt), compute them once and let each example attend to them (same loss and gradients)."
        ),
    )
    gradient_checkpointing: bool = Field(
        False,
        description=(
            "Keep only each layer's input for backward and compute the layer again there: about a third more "
            "compute for much less activation memory (long sequences, big models)."
        ),
    )
    liger_kernels: bool = Field(
        True,
        description="On a CUDA GPU where liger-kernel is installed: its fused RMSNorm, SwiGLU and RoPE kernels.",
    )
    load_in_4bit: bool = Field(
        False,
        description=(
            "QLoRA: keep the frozen base model in 4 bits (NF4, through bitsandbytes), for models that do not fit "
            "in bf16; LoRA only."
        ),
    )
    cache_tokens: bool = Field(
        True,
        description=(
            "Keep the tokenised data under $TUNEFORGE_HOME/cache/tokens, keyed by the data's sha256 and the "
            "tokenizer, so the next run or a resume skips parsing and tokenising."
        ),
    )

    # LoRA.
    lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    lora_alpha: int = Field(32, ge=1, le=65536, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    # 0 by default, as in PEFT, LLaMA-Factory and Unsloth: on this CPU, dropout on every adapted layer's
    # input cost 18 % of a LoRA step even fused (benchmarks/RESULTS.md); set it for small, noisy data.
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input (0: none, the fastest).")
    lora_target_modules: str = Field("all-linear", description="Comma-separated module names to adapt, or all-linear.")

    # Validation, early stopping, checkpoints.
    eval_every_steps: int | Auto | None = Field(
        "auto",
        description=(
            "Also validate every N steps (always at each epoch's end; not within N/4 steps of another validation); "
            "auto: twice an epoch, so early stopping can stop within an epoch of the plateau."
        ),
    )
    max_eval_examples: int = Field(
        200, ge=1, le=100_000, description="Validation examples used at most (the first N, in file order)."
    )
    early_stopping_patience: int | Auto | None = Field(
        "auto",
        description=(
            "Stop after this many validations without improvement (see early_stopping_threshold); the best "
            f"checkpoint is what the run keeps. auto: {AUTO_PATIENCE} when there is validation data, else off; 0: off."
        ),
    )
    early_stopping_threshold: float = Field(
        0.002,
        ge=0.0,
        lt=1.0,
        description=(
            "A validation loss lower than the best by less than this share of it counts as no improvement: a "
            "plateau, not progress."
        ),
    )
    early_stopping_min_delta: float = Field(
        0.001,
        ge=0.0,
        description=(
            "Nor does a gain smaller than this, in nats per token: a validation loss already near 0 (0.0003 -> "
            "0.0002) has nothing left to learn, and more steps only forget."
        ),
    )
    keep_checkpoints: int = Field(
        3, ge=1, le=100, description="Newest epoch checkpoints kept (the best one is always kept too)."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimiser steps (for smoke tests and benchmarks)."
    )

    # Experiment trackers (runs/tracking.py): where else the run's metrics go.
    report_to: str = Field(
        "",
        description=(
            "Trackers that also receive the run's config and metrics, comma-separated: tensorboard (into the run "
            "directory), wandb (W&B's own settings: WANDB_MODE=offline, WANDB_API_KEY, ...), mlflow "
            "(MLFLOW_TRACKING_URI); none by default."
        ),
    )
    tracking_project: str | None = Field(
        None, max_length=128, description="The W&B project or MLflow experiment of the run (default: tuneforge)."
    )
    tracking_name: str | None = Field(
        None, max_length=128, description="The run's name in the trackers (default: its run id)."
    )
    tracking_tags: str = Field("", max_length=1024, description="Comma-separated tags for the trackers' run.")
    wandb_entity: str | None = Field(None, max_length=128, description="The W&B team or user the run goes to.")

    # The forgetting guard (general.py).
    forgetting_guard: bool = Field(
        True,
        description=(
            "Watch general ability: at each validation, also score built-in general prompts with reference answers "
            "(general_loss beside the task's valid_loss, in metrics.csv, the events and the card)."
        ),
    )
    replay_share: float = Field(
        0.2,
        ge=0.0,
        le=0.5,
        description=(
            "With forgetting_guard: replay examples added to training, as a share of the task's examples: the base "
            "model's own sampled answers to built-in general prompts (generated once per base model and cached), so "
            "the tuned model keeps what it knew; none for files under 50 examples. 0: none."
        ),
    )

    @field_validator("lora_target_modules")
    @classmethod
    def _modules(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name at least one module, or all-linear")
        return value

    # Field validators (not one model validator) so an error names its field: the CLI, YAML and the
    # jobs API (`param`) all point at the exact option.
    @field_validator("n_epochs", "batch_size")
    @classmethod
    def _at_least_one(cls, value, info):
        # OpenAI's own maxima: 50 epochs, batches of 256 (beyond them a run is a mistake, not a plan).
        most = MAXIMA[info.field_name]
        if value != "auto" and not 1 <= value <= most:
            raise ValueError(f"{info.field_name} must be between 1 and {most}, or auto")
        return value

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _multiplier(cls, value):
        if value != "auto" and not 0 < value <= 100:
            raise ValueError("learning_rate_multiplier must be in (0, 100] or auto")
        return value

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip() and name.strip().lower() != "none"]
        unknown = [name for name in names if name not in TRACKERS]
        if unknown:
            raise ValueError(f"unknown tracker '{unknown[0]}': report_to takes {', '.join(TRACKERS)}, comma-separated")
        return ",".join(dict.fromkeys(names))

    @field_validator("dpo_beta")
    @classmethod
    def _beta(cls, value):
        if value != "auto" and not 0 < value <= 10:
            raise ValueError("dpo_beta must be in (0, 10] or auto")
        return value

    @field_validator("eval_every_steps", "early_stopping_patience")
    @classmethod
    def _count_or_auto(cls, value, info):
        least = 1 if info.field_name == "eval_every_steps" else 0
        if value not in ("auto", None) and value < least:
            raise ValueError(f"{info.field_name} must be at least {least}, or auto")
        return value

    @field_validator("max_seq_length")
    @classmethod
    def _sequence(cls, value):
        if value != "auto" and not 16 <= value <= MAXIMA["max_seq_length"]:
            raise ValueError(f"max_seq_length must be between 16 and {MAXIMA['max_seq_length']} tokens, or auto")
        return value

    # ------------------------------------------------------------------------------ contradictions
    # Options that cannot both hold, rejected at load as LitGPT's __post_init__ does. Each error's
    # `loc` is the option the user set, so the CLI, YAML and the jobs API (`param`) point at it; its
    # message names the other option and says what to do. Only explicit choices are judged
    # (model_fields_set): defaults never contradict each other, and a switch turned off where it
    # could not run anyway (--no-fused-lora with method full) is harmless, so it is accepted.
    # Accepted on purpose:
    # - early_stopping_patience without validation_data: validation.jsonl beside prepared data counts
    #   too, and the jobs API checks its config before the files are attached, so only the run can
    #   tell; sft.py stops with "early stopping needs validation data" before the model loads.
    # - eval_every_steps above max_steps: a smoke test adds --max-steps to a config that validates
    #   every N steps; the run still validates before the first step and at each epoch's end.
    # - fast_lora_dropout with lora_dropout 0: the defaults themselves; with no dropout there is
    #   nothing to fuse and nothing is lost.
    @model_validator(mode="after")
    def _no_contradictions(self, info: ValidationInfo) -> "TrainConfig":
        # A run's record (a ResolvedConfig from `resolve`, the registry's copy that `--resume` reloads)
        # names every field, so every value in it looks chosen, and its autos are Tuneforge's choices
        # (precision auto -> fp32 beside frozen_weights_bf16's default). It is validated with
        # `context=RECORDED` and taken as it ran: the TrainConfig it came from was checked.
        if (info.context or {}).get("recorded"):
            return self
        problems = list(self._contradictions())
        if problems:  # a ValidationError, not a ValueError, so that each error keeps its field as `loc`
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("contradiction", "{message}", {"message": message}),
                        loc=(field,),
                        input=getattr(self, field),
                    )
                    for field, message in problems
                ],
            )
        return self

    def _contradictions(self) -> Iterator[tuple[str, str]]:
        """(field the user set, what is wrong and what to do) for each contradiction."""
        chosen = self.model_fields_set
        if "chunked_loss" in chosen and self.chunked_loss and not self.sparse_output_layer:
            # weighted_token_loss only chunks the loss-carrying tokens that the sparse output layer
            # selects; without it the full logits are computed and chunked_loss is silently unused.
            yield (
                "chunked_loss",
                (
                    "chunked_loss needs sparse_output_layer: the loss is chunked over the tokens that the "
                    "sparse output layer selects, and sparse_output_layer is off. Turn sparse_output_layer "
                    "on, or set chunked_loss to false."
                ),
            )
        if "shared_prefix" in chosen and self.shared_prefix and not self.padding_free:
            yield (
                "shared_prefix",
                (
                    "shared_prefix lays a batch's common prefix once in a padding-free row, but padding_free is "
                    "off, so there is no such row. Turn padding_free on, or set shared_prefix to false."
                ),
            )
        if self.method == "full":
            for name in LORA_SETTINGS:
                if name in chosen and getattr(self, name) != TrainConfig.model_fields[name].default:
                    yield (
                        name,
                        (
                            f"{name} is a LoRA setting, but method is full (every weight trains, there are no "
                            f"adapters), so {name}={getattr(self, name)} would be ignored. Use method lora, or "
                            f"leave {name} out."
                        ),
                    )
            for name in LORA_SWITCHES:
                if name in chosen and getattr(self, name):
                    yield (
                        name,
                        (
                            f"{name} only applies to LoRA, but method is full (every weight trains, there are no "
                            f"adapters). Use method lora, or set {name} to false."
                        ),
                    )
        elif "frozen_weights_bf16" in chosen and self.frozen_weights_bf16 and self.precision == "fp32":
            yield (
                "frozen_weights_bf16",
                (
                    "frozen_weights_bf16 stores the frozen weights in bf16, but precision is fp32, "
                    "so they would stay fp32. Use precision bf16 (or auto), or set "
                    "frozen_weights_bf16 to false."
                ),
            )
        if self.nproc > 1 and ":" in self.device:
            # Each process takes the GPU of its local rank; one named GPU cannot be every process's.
            yield (
                "device",
                (
                    f"device {self.device} names one GPU, but nproc is {self.nproc}: each process uses the GPU of its "
                    "local rank. Use device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES), or nproc 1."
                ),
            )
        if "validation_split" in chosen and self.validation_split > 0 and self.validation_data is not None:
            yield (
                "validation_split",
                (
                    "validation_split holds out part of the training file when there is no validation data, but "
                    "validation_data is given, so nothing would be held out. Leave validation_split out, or "
                    "validation_data."
                ),
            )
        if "replay_share" in chosen and self.replay_share > 0 and not self.forgetting_guard:
            yield (
                "replay_share",
                (
                    "replay_share mixes in replay examples as part of the forgetting guard, but forgetting_guard is "
                    "off, so none would be mixed in. Turn forgetting_guard on, or set replay_share to 0."
                ),
            )
        yield from self._preference_contradictions(chosen)
        if self.batch_size != "auto" and self.gradient_accumulation_steps > self.batch_size:
            # batch_size counts one optimiser step's examples, and accumulation splits them (unlike
            # Hugging Face's per-device batch x accumulation), so they cannot fill that many micro-batches.
            yield (
                "gradient_accumulation_steps",
                (
                    f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) is more than batch_size "
                    f"({self.batch_size}): batch_size is the examples of one optimiser step, split into "
                    f"gradient_accumulation_steps micro-batches. For "
                    f"{self.batch_size * self.gradient_accumulation_steps} "
                    f"examples per step, set batch_size to {self.batch_size * self.gradient_accumulation_steps}; "
                    f"otherwise lower gradient_accumulation_steps to at most {self.batch_size}."
                ),
            )

    def _preference_contradictions(self, chosen: set[str]) -> Iterator[tuple[str, str]]:
        if self.objective != "dpo":
            if "dpo_beta" in chosen and self.dpo_beta != "auto":
                yield (
                    "dpo_beta",
                    "dpo_beta is a DPO setting, but objective is sft. Use objective dpo, or leave it out.",
                )
            return
        reasons = {
            "prompt_loss_weight": (
                self.prompt_loss_weight > 0,
                "DPO compares the replies' likelihoods only, so a prompt loss weight would be ignored",
            ),
            "replay_share": (
                self.replay_share > 0,
                "replay examples are chat examples for SFT; DPO keeps the model near the one it starts from "
                "through dpo_beta instead (the forgetting guard still scores the general prompts)",
            ),
            "shared_prefix": (self.shared_prefix, "a batch of preference pairs is not laid out with a shared prefix"),
        }
        for name, (wrong, why) in reasons.items():
            if name in chosen and wrong:
                yield (name, f"{name} with objective dpo: {why}. Leave {name} out, or use objective sft.")
        if self.nproc > 1:
            yield (
                "nproc",
                f"objective dpo runs in one process for now (nproc is {self.nproc}). Use nproc 1, or objective sft.",
            )

    def __setattr__(self, name, value):
        # pydantic applies an assignment before the model validator runs and keeps it when the validator
        # rejects it (pydantic#7105): put the old value back, so a rejected assignment changes nothing.
        if name not in type(self).model_fields:
            return super().__setattr__(name, value)
        old, was_chosen = self.__dict__.get(name), name in self.model_fields_set
        try:
            super().__setattr__(name, value)
        except ValidationError:
            self.__dict__[name] = old
            if not was_chosen:
                self.model_fields_set.discard(name)
            raise

    # ------------------------------------------------------------------------------ resolution
    def resolved_max_seq_length(self, context_length: int | None) -> int:
        """Known before the data is read (unlike the other autos), so tokenisation can come first."""
        return self.max_seq_length if self.max_seq_length != "auto" else min(context_length or 2048, 2048)

    def resolve(
        self,
        n_train_examples: int,
        context_length: int | None,
        has_validation: bool = False,
        mean_tokens: float | None = None,
    ) -> "ResolvedConfig":
        """Every auto filled in for `n_train_examples` (the task's, before any replay) of `mean_tokens`
        tokens on average (None: unknown, the smallest auto batch) and whether the run has validation
        data (early stopping and mid-epoch validation need it)."""
        device = resolve_device(self.device)
        n_epochs = self.n_epochs if self.n_epochs != "auto" else auto_epochs(n_train_examples)
        batch = (
            self.batch_size
            if self.batch_size != "auto"
            else max(
                self.gradient_accumulation_steps,
                auto_batch_size(n_train_examples, mean_tokens, n_epochs, device_type(device)),
            )
        )
        # The task's examples only: with replay an epoch runs longer, so a run validates a little more
        # than twice an epoch (short answers: steps 40, 80, 96, 120, ... of 96-step epochs). Counting
        # the replay (every 48) made classification stop at step 192 instead of 120 (benchmarks/
        # RESULTS.md, 2026-12-02 late evening): the extra validations pay for their time there.
        steps_per_epoch = -(-n_train_examples // batch)
        multiplier = (
            self.learning_rate_multiplier
            if self.learning_rate_multiplier != "auto"
            else round(
                AUTO_MULTIPLIER
                * (batch / AUTO_MULTIPLIER_BATCH)
                * (DPO_RATE_SHARE if self.objective == "dpo" else 1.0),
                5,
            )
        )
        values = self.model_dump()
        values.update(
            device=device,
            n_epochs=n_epochs,
            batch_size=batch,
            learning_rate_multiplier=multiplier,
            max_seq_length=self.resolved_max_seq_length(context_length),
            precision=self.precision if self.precision != "auto" else ("bf16" if bf16_is_fast(device) else "fp32"),
            eval_every_steps=(
                self.eval_every_steps
                if self.eval_every_steps != "auto"
                else (max(1, steps_per_epoch // 2) if has_validation and steps_per_epoch >= 4 else None)
            ),
            dpo_beta=(self.dpo_beta if self.dpo_beta != "auto" else AUTO_DPO_BETA)
            if self.objective == "dpo"
            else "auto",
            replay_share=0.0 if self.objective == "dpo" else self.replay_share,
            early_stopping_patience=(
                (AUTO_PATIENCE if has_validation else None)
                if self.early_stopping_patience == "auto"
                else self.early_stopping_patience or None
            ),
        )
        return ResolvedConfig.model_validate(
            {**values, "learning_rate": BASE_LEARNING_RATE[self.method] * multiplier}, context=RECORDED
        )


class ResolvedConfig(TrainConfig):
    """A TrainConfig with every "auto" filled in, plus the learning rate it implies."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    max_seq_length: int
    precision: Literal["fp32", "bf16"]
    eval_every_steps: int | None
    early_stopping_patience: int | None
    dpo_beta: float | Auto
    learning_rate: float = Field(..., description="Peak learning rate: base rate x multiplier.")


def auto_batch_size(n_examples: int, mean_tokens: float | None, n_epochs: int, device_type: str = "cpu") -> int:
    """Examples per step by tokens: the power of two nearest TOKENS_PER_STEP / mean_tokens, within
    AUTO_BATCH_RANGE, halved while the run would take fewer than MIN_AUTO_STEPS steps (small data
    learns from many small steps, not from a few full ones)."""
    smallest, largest = AUTO_BATCH_RANGE
    if not mean_tokens:
        return smallest
    target = TOKENS_PER_STEP.get(device_type, TOKENS_PER_STEP["cpu"]) / mean_tokens
    batch = int(min(largest, max(smallest, 2 ** round(math.log2(max(target, 1.0))))))
    while batch > smallest and -(-n_examples // batch) * n_epochs < MIN_AUTO_STEPS:
        batch //= 2
    return batch


def load_config(path: Path | None, overrides: dict) -> TrainConfig:
    """A YAML file's values, then the command line's on top; errors name the field."""
    values: dict = {}
    if path is not None:
        if not path.exists():
            raise UsageError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UsageError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(values, dict):
            raise UsageError(f"{path}: expected a mapping of TrainConfig fields")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors())
        source = f"{path} + command line" if path else "command line"
        raise UsageError(
            f"invalid training config ({source}): {problems}", fix="See `tuneforge train --help`."
        ) from None
