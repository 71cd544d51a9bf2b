"""The supervised fine-tuning recipe: LoRA (default) or full fine-tuning, in one flat loop.

Run: `tuneforge train --data prepared/support_chat` (see `tuneforge train --help`).

data -> token ids with loss weights (inputs.py) -> model (+ LoRA adapters via peft) -> AdamW with
warm-up and decay -> per step: weighted cross-entropy, clipping, metrics.csv row -> validation every
N steps and at each epoch's end -> checkpoint per epoch (and at each new best) -> early stopping ->
final adapter/weights, model card, loss curve, manifest (artifacts.py). The run's life goes to the
`Reporter` (reporter.py); `tuneforge.runs.training` records it in the registry.

Ctrl-C (or SIGTERM) finishes the current step, saves a checkpoint and stops; `--resume RUN_ID`
continues from the newest complete checkpoint with the same result as an uninterrupted run.
"""

import csv
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.errors import UsageError
from tuneforge.models.catalog import load_model, load_tokenizer, model_facts
from tuneforge.train import artifacts
from tuneforge.train.config import ResolvedConfig, TrainConfig
from tuneforge.train.host_memory import HeapGrowthGuard
from tuneforge.train.inputs import locate_data, tokenized_file
from tuneforge.train.loop import (
    Batch,
    TrainerState,
    build_optimizer,
    build_schedule,
    collate,
    collate_padding_free,
    epoch_order,
    evaluate,
    load_training_state,
    newest_complete_checkpoint,
    save_checkpoint,
    seed_everything,
    weighted_token_loss,
)
from tuneforge.train.reporter import DataRecord, Reporter, RunResult, TrainingInterrupted

METRIC_COLUMNS = [
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "valid_perplexity",
    "epoch",
    "learning_rate",
    "tokens",
    "tokens_per_second",
    "trained_tokens",
]


@contextmanager
def stop_requests():
    """Turn the first Ctrl-C/SIGTERM into a flag checked between steps (a step is never left half
    done); a second Ctrl-C stops at once."""
    requested = {"stop": False}

    def handler(signum, frame):
        if requested["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train_sft(
    config: TrainConfig, reporter: Reporter, run_dir: Path, resume: bool = False, model_name: str | None = None
) -> RunResult:
    """Train into `run_dir` (its name is the run id), or continue it from its newest checkpoint with
    `resume`. `model_name` is what the result is called in its card (default: the run id). What
    becomes of the run's life (rows, events, a progress bar) is the reporter's business."""
    run_id = run_dir.name
    try:
        return _train_sft(config, reporter, run_dir, resume, model_name or run_id)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: no new checkpoint, but the last complete one resumes
        reporter.interrupted(run_id, None)
        raise
    except Exception as error:
        reporter.failed(run_id, f"{type(error).__name__}: {error}")
        raise


def _train_sft(config: TrainConfig, reporter: Reporter, run_dir: Path, resume: bool, model_name: str) -> RunResult:
    # ---- data: everything that can be wrong is found before the model loads
    train_file, validation_file = locate_data(config.data, config.validation_data)
    if config.early_stopping_patience and not validation_file:
        raise UsageError(
            "early stopping needs validation data",
            fix="Pass --validation-data, or prepare the data with a validation split.",
        )
    hf_tokenizer = load_tokenizer(config.model)
    facts = model_facts(config.model)
    tokenizer = ChatTokenizer(
        hf_tokenizer, config.prompt_loss_weight, config.resolved_max_seq_length(facts["context_length"])
    )
    train_set, kind = tokenized_file(train_file, tokenizer, "training", config.cache_tokens)
    validation_set = (
        tokenized_file(validation_file, tokenizer, "validation", config.cache_tokens)[0][: config.max_eval_examples]
        if validation_file
        else []
    )
    resolved = config.resolve(len(train_set), facts["context_length"])
    pad_id = tokenizer.pad_id

    # ---- the run: a directory (and, through the reporter, whatever records it)
    run_id = run_dir.name
    checkpoints_dir = run_dir / "checkpoints"
    if resume:
        if not run_dir.exists():
            raise UsageError(f"no run directory for '{run_id}' at {run_dir}")
    else:
        checkpoints_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(resolved.model_dump_json(indent=2))
        reporter.created(
            run_id,
            resolved,
            run_dir,
            DataRecord(train_file.path, train_file.sha256, kind, len(train_set), train_file.manifest),
            DataRecord(validation_file.path, validation_file.sha256, kind, len(validation_set), None)
            if validation_file
            else None,
        )

    # ---- model, optimiser, schedule
    seed_everything(resolved.seed)
    model = build_model(resolved)
    steps_per_epoch = -(-len(train_set) // resolved.batch_size)
    total_steps = steps_per_epoch * resolved.n_epochs
    if resolved.max_steps:
        total_steps = min(total_steps, resolved.max_steps)
    optimizer = build_optimizer(model, resolved.learning_rate, resolved.weight_decay)
    scheduler = build_schedule(optimizer, resolved.lr_scheduler, int(resolved.warmup_ratio * total_steps), total_steps)
    state = TrainerState()
    if resume:
        checkpoint = newest_complete_checkpoint(checkpoints_dir)
        if checkpoint is None:
            raise UsageError(f"run '{run_id}' has no complete checkpoint to resume from")
        artifacts.load_weights(model, checkpoint, resolved.method)
        state = load_training_state(checkpoint, optimizer, scheduler)
        artifacts.truncate_metrics(run_dir / "metrics.csv", state.step)
        reporter.resumed(run_id)

    validation_batches = _validation_batches(validation_set, resolved.batch_size, pad_id, resolved.padding_free)
    dtype = compute_dtype(resolved)
    metrics_file = (run_dir / "metrics.csv").open("a", newline="")
    writer = csv.DictWriter(metrics_file, METRIC_COLUMNS)
    if metrics_file.tell() == 0:
        writer.writeheader()
    reporter.start(run_id, resolved, total_steps, state.step)
    started, stopped_early, interrupted = time.perf_counter(), False, False
    heap_guard = HeapGrowthGuard()
    last_evaluation: dict = {}

    def validate(row: dict) -> bool:
        """Add validation metrics to this step's row; True when they are the best so far."""
        nonlocal last_evaluation
        last_evaluation = evaluate(
            model, validation_batches, resolved.sparse_output_layer, dtype, resolved.chunked_loss
        )
        row.update({name: round(value, 6) for name, value in last_evaluation.items()})
        reporter.evaluation(row)
        if state.step == 0:
            return False  # the base model: a reference point, not a checkpoint to keep
        improved = state.best_valid_loss is None or last_evaluation["valid_loss"] < state.best_valid_loss - 1e-6
        if improved:
            state.best_valid_loss, state.best_step, state.evaluations_without_improvement = (
                last_evaluation["valid_loss"],
                state.step,
                0,
            )
        else:
            state.evaluations_without_improvement += 1
        return improved

    def checkpoint(epoch_end: bool) -> None:
        path = save_checkpoint(
            checkpoints_dir / f"step-{state.step}",
            model,
            optimizer,
            scheduler,
            state,
            last_evaluation or None,
            epoch_end,
        )
        reporter.checkpoints_kept(
            run_id, artifacts.prune_checkpoints(checkpoints_dir, resolved.keep_checkpoints, state.best_step)
        )
        reporter.checkpoint(state.step, path)

    if validation_batches and state.step == 0:
        # The base model's validation loss: where the curve starts, and what tuning must beat.
        row = {"step": 0, "epoch": 0.0}
        validate(row)
        writer.writerow(row)
    batches, batches_epoch = [], None
    lengths = [len(e.input_ids) for e in train_set] if resolved.group_by_length else None
    with stop_requests() as stop:
        while state.epoch < resolved.n_epochs:
            if batches_epoch != state.epoch:
                batches, batches_epoch = (
                    epoch_order(len(train_set), resolved.batch_size, resolved.seed, state.epoch, lengths),
                    state.epoch,
                )
            step_started = time.perf_counter()
            loss, accuracy, tokens, trained = train_step(
                model, [train_set[i] for i in batches[state.batch_in_epoch]], resolved, pad_id
            )
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], resolved.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            heap_guard.after_step()
            state.step, state.batch_in_epoch, state.trained_tokens = (
                state.step + 1,
                state.batch_in_epoch + 1,
                state.trained_tokens + trained,
            )
            epoch_progress = state.epoch + state.batch_in_epoch / len(batches)
            epoch_end = state.batch_in_epoch == len(batches)
            if epoch_end:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            row = {
                "step": state.step,
                "train_loss": round(loss, 6),
                "train_accuracy": round(accuracy, 6),
                "epoch": round(epoch_progress, 4),
                "learning_rate": learning_rate,
                "tokens": tokens,
                "tokens_per_second": round(tokens / (time.perf_counter() - step_started), 1),
                "trained_tokens": int(state.trained_tokens),
            }
            due = epoch_end or (resolved.eval_every_steps and state.step % resolved.eval_every_steps == 0)
            improved = validate(row) if validation_batches and due else False
            writer.writerow(row)
            metrics_file.flush()
            reporter.step(row)
            if epoch_end or improved:
                checkpoint(epoch_end)
            if stop["stop"] or reporter.should_stop():
                interrupted = True
                if not (epoch_end or improved):
                    checkpoint(False)  # mid-epoch: save exactly where we are
                break
            if resolved.max_steps and state.step >= resolved.max_steps:
                break
            if (
                resolved.early_stopping_patience
                and state.evaluations_without_improvement >= resolved.early_stopping_patience
            ):
                stopped_early = True
                break
    metrics_file.close()
    wall = time.perf_counter() - started

    if interrupted:
        reporter.interrupted(run_id, int(state.trained_tokens))
        raise TrainingInterrupted(
            f"run {run_id} stopped at step {state.step}; a checkpoint was saved",
            fix=f"Resume with: tuneforge train --resume {run_id}",
        )
    if resolved.early_stopping_patience and state.best_step is not None and state.best_step != state.step:
        artifacts.load_weights(model, checkpoints_dir / f"step-{state.best_step}", resolved.method)
    final = {
        "step": state.step,
        "trained_tokens": int(state.trained_tokens),
        "wall_seconds": round(wall, 1),
        "best_step": state.best_step,
        "stopped_early": stopped_early,
        **last_evaluation,
    }
    artifacts.write_run(run_dir, model, hf_tokenizer, resolved, model_name, final, train_file, validation_file)
    result = RunResult(run_id, run_dir, model_name, resolved, final, stopped_early)
    reporter.finished(result, artifacts.weights_dir(run_dir, resolved.method))
    return result


def build_model(config: ResolvedConfig):
    """The base model in training mode, with LoRA adapters (via peft) for method lora."""
    bf16_base = config.method == "lora" and config.precision == "bf16" and config.frozen_weights_bf16
    # The frozen weights never change, so only the trained ones need fp32 masters (peft keeps the
    # adapters in fp32: autocast_adapter_dtype). Not quite what autocast computes, though: autocast
    # rounds a matmul's inputs to bf16 but keeps embeddings, norm weights and the residual stream in
    # fp32, and these copies round those too (measured on the learned tiny model: loss ~5e-4 apart,
    # LoRA gradients ~1.3e-2, twice autocast's own gap to fp32; tests/test_speed_tricks.py).
    model = load_model(config.model, dtype=torch.bfloat16 if bf16_base else None)
    if config.padding_free:
        from tuneforge.train.padding_free import use_varlen_attention

        use_varlen_attention(model)
    if config.lean_activations:
        from tuneforge.train.lean_activations import use_lean_activations

        use_lean_activations(model)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = config.lora_target_modules
        try:
            model = get_peft_model(
                model,
                LoraConfig(
                    r=config.lora_rank,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                    task_type="CAUSAL_LM",
                ),
            )
        except ValueError as error:  # peft's word for target modules the model does not have
            raise UsageError(
                f"lora_target_modules '{targets}': {error}", fix="Use all-linear, or names such as q_proj,v_proj."
            ) from None
        if config.fast_lora_dropout:
            from tuneforge.train.lora_dropout import fuse_lora_dropout

            fuse_lora_dropout(model)
        if config.fused_lora:
            from tuneforge.train.fused_lora import fuse_lora_layers

            fuse_lora_layers(model)
        if bf16_base:
            # peft casts each layer's bf16 input to the adapters' fp32, and autocast casts it back for
            # the matmul: two copies of every adapted layer's input for nothing.
            for module in model.modules():
                if hasattr(module, "cast_input_dtype_enabled"):
                    module.cast_input_dtype_enabled = False
    model.train()
    return model


def train_step(model, examples, config: ResolvedConfig, pad_id: int) -> tuple[float, float, int, float]:
    """One optimiser step's forward and backward passes, in `gradient_accumulation_steps` micro-batches.

    Each micro-batch's weighted loss is divided by the whole step's loss weight, so accumulating
    micro-batches gives the same gradient as one big batch."""
    total_weight = sum(float(e.loss_weights[1:].sum()) for e in examples)
    parts = config.gradient_accumulation_steps
    size = -(-len(examples) // parts)
    dtype = compute_dtype(config)
    loss_sum, correct, counted, tokens = 0.0, 0, 0, 0
    for start in range(0, len(examples), size):
        batch = make_batch(examples[start : start + size], pad_id, config.padding_free)
        weighted, right, n = weighted_token_loss(model, batch, config.sparse_output_layer, dtype, config.chunked_loss)
        (weighted / total_weight).backward()
        loss_sum, correct, counted, tokens = (
            loss_sum + weighted.item(),
            correct + right,
            counted + n,
            tokens + batch.tokens,
        )
    return loss_sum / total_weight, correct / max(counted, 1), tokens, total_weight


def compute_dtype(config: ResolvedConfig) -> torch.dtype | None:
    """The autocast dtype of the matmuls; None for plain fp32."""
    return torch.bfloat16 if config.precision == "bf16" else None


def make_batch(examples, pad_id: int, padding_free: bool) -> Batch:
    return collate_padding_free(examples) if padding_free else collate(examples, pad_id)


def _validation_batches(validation_set, batch_size: int, pad_id: int, padding_free: bool) -> list[Batch]:
    # Sorted by length, so each batch pads little; the order does not change the weighted mean.
    ordered = sorted(validation_set, key=lambda e: len(e.input_ids))
    return [make_batch(ordered[i : i + batch_size], pad_id, padding_free) for i in range(0, len(ordered), batch_size)]
