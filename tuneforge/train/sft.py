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
import math
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.errors import UsageError
from tuneforge.hardware import device_type, peak_memory, reset_peak_memory, resolve_device, synchronize
from tuneforge.models.catalog import load_tokenizer, model_facts
from tuneforge.train import artifacts, distributed, dpo
from tuneforge.train.config import TOKENS_PER_STEP, ResolvedConfig, TrainConfig
from tuneforge.train.distributed import Ranks
from tuneforge.train.dpo import PreferenceLoss
from tuneforge.train.general import GeneralAbility, general_probes, mix_replay
from tuneforge.train.host_memory import HeapGrowthGuard
from tuneforge.train.inputs import HELD_OUT_MINIMUM_TRAINING, hold_out, load_examples, locate_data, tokenized_file
from tuneforge.train.loop import (
    Batch,
    TrainerState,
    batches_per_epoch,
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
    validation_due,
)
from tuneforge.train.modeling import (
    TokenLoss,
    build_model,
    gathered_state,
    gathered_weights,
    gradient_sync,
    is_sharded,
    load_full_weights,
    load_optimizer_state,
    reshard,
    unwrapped,
    wrap,
)
from tuneforge.train.reporter import (
    DPO_STEP_FIELDS,
    DPO_VALID_FIELDS,
    DataRecord,
    Reporter,
    RunResult,
    TrainingInterrupted,
)
from tuneforge.train.shared_prefix import shares_prefix_on

METRIC_COLUMNS = [
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "valid_perplexity",
    "general_loss",
    "general_perplexity",
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


def made_progress(loss: float, best: float | None, threshold: float, min_delta: float) -> bool:
    """Whether a validation loss is progress over the best so far, for early stopping's patience: lower
    by `threshold` of the best and by `min_delta` nats. The relative test alone never fires on a loss
    near 0, where each gain is a large share of almost nothing (classification at 0.0003 -> 0.0002)."""
    return best is None or loss < min(best * (1 - threshold), best - min_delta)


def train_sft(
    config: TrainConfig,
    reporter: Reporter,
    run_dir: Path,
    resume: bool = False,
    model_name: str | None = None,
    general: GeneralAbility | None = None,
    start_adapter: Path | None = None,
) -> RunResult:
    """Train into `run_dir` (its name is the run id), or continue it from its newest checkpoint with
    `resume`. `model_name` is what the result is called in its card (default: the run id). What
    becomes of the run's life (rows, events, a progress bar) is the reporter's business. `general`
    is the forgetting guard's prompts (general.py; the service layer builds them): without it, or
    with `forgetting_guard` off, nothing general is scored or replayed. `start_adapter` is a LoRA
    adapter directory the new adapter starts from (a tuned model trained further)."""
    run_id = run_dir.name
    try:
        return _train_sft(config, reporter, run_dir, resume, model_name or run_id, general, start_adapter)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: no new checkpoint, but the last complete one resumes
        reporter.interrupted(run_id, None)
        raise
    except Exception as error:
        reporter.failed(run_id, f"{type(error).__name__}: {error}")
        raise


def _train_sft(
    config: TrainConfig,
    reporter: Reporter,
    run_dir: Path,
    resume: bool,
    model_name: str,
    general: GeneralAbility | None,
    start_adapter: Path | None,
) -> RunResult:
    # ---- this process: its device, and its rank among the processes torchrun started (distributed.py)
    place = distributed.ranks()
    device = resolve_device(config.device)
    if place.distributed:
        device = distributed.start(device, place)
        if not place.main:
            reporter = Reporter()  # rank 0 reports for all
            distributed.barrier()  # rank 0 fills the token cache first (below), the others read it
    # ---- data: everything that can be wrong is found before the model loads
    train_file, validation_file = locate_data(config.data, config.validation_data)
    hf_tokenizer = load_tokenizer(config.model)
    facts = model_facts(config.model)
    tokenizer = ChatTokenizer(
        hf_tokenizer, config.prompt_loss_weight, config.resolved_max_seq_length(facts["context_length"])
    )
    preference = config.objective == "dpo"
    train_set, kind = read_examples(train_file, tokenizer, "training", config)
    validation_set = (
        read_examples(validation_file, tokenizer, "validation", config)[0][: config.max_eval_examples]
        if validation_file
        else []
    )
    if place.distributed and place.main:
        distributed.barrier()
    held_out = None
    if validation_file is None:  # validate on a seeded share of the training file (inputs.hold_out)
        train_set, validation_set, held_out = hold_out(train_set, config.validation_split, config.seed)
        validation_set = validation_set[: config.max_eval_examples]
    if config.early_stopping_patience not in ("auto", None, 0) and not validation_set:
        raise UsageError(
            "early stopping needs validation data",
            fix=(
                "Pass --validation-data, prepare the data with a validation split, or train on at least "
                f"{HELD_OUT_MINIMUM_TRAINING} examples with validation_split > 0."
            ),
        )
    resolved = config.resolve(
        len(train_set),
        facts["context_length"],
        has_validation=bool(validation_set),
        mean_tokens=sum(len(e.input_ids) for e in train_set) / len(train_set) if train_set else None,
    )
    pad_id = tokenizer.pad_id
    # The forgetting guard: general prompts scored beside the task's validation, replay mixed in.
    general = general if resolved.forgetting_guard else None
    general_set = general_probes(general, tokenizer)
    train_set, replayed = mix_replay(train_set, general, resolved.replay_share, tokenizer, resolved.seed)
    # the task's examples, then the replay's: a batch holds one block's only (loop.epoch_order)
    sources = [len(train_set) - replayed.examples, replayed.examples] if replayed else [len(train_set)]

    # ---- the run: a directory (and, through the reporter, whatever records it)
    run_id = run_dir.name
    checkpoints_dir = run_dir / "checkpoints"
    if resume:
        if not run_dir.exists():
            raise UsageError(f"no run directory for '{run_id}' at {run_dir}")
    elif place.main:
        checkpoints_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(resolved.model_dump_json(indent=2))
        reporter.created(
            run_id,
            resolved,
            run_dir,
            DataRecord(train_file.path, train_file.sha256, kind, len(train_set), train_file.manifest),
            DataRecord(validation_file.path, validation_file.sha256, kind, len(validation_set), None)
            if validation_file
            else DataRecord(
                train_file.path, train_file.sha256, kind, len(validation_set), {"held_out": asdict(held_out)}
            )
            if held_out
            else None,
        )

    # ---- model, optimiser, schedule
    seed_everything(resolved.seed)
    reset_peak_memory(device)
    model = build_model(resolved, device)
    checkpoint_found = newest_complete_checkpoint(checkpoints_dir) if resume else None
    if resume and checkpoint_found is None:
        raise UsageError(f"run '{run_id}' has no complete checkpoint to resume from")
    if checkpoint_found is not None:  # into the plain model, before it is sharded
        artifacts.load_weights(model, checkpoint_found, resolved.method)
    elif start_adapter is not None:  # a tuned model trained further: its adapter is where this run starts
        artifacts.load_weights(model, start_adapter, "lora")
    if preference:  # the model as it starts is DPO's reference: its log-probs, once (dpo.py)
        dpo.attach_references(
            model, {"train": train_set, "validation": validation_set}, resolved, pad_id, device, run_dir
        )
    wrapped = wrap((PreferenceLoss if preference else TokenLoss)(model, resolved), resolved, device, place)
    steps_per_epoch = batches_per_epoch(sources, resolved.batch_size)
    total_steps = steps_per_epoch * resolved.n_epochs
    if resolved.max_steps:
        total_steps = min(total_steps, resolved.max_steps)
    trained_parameters = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = build_optimizer(unwrapped(wrapped).model, resolved.learning_rate, resolved.weight_decay)
    scheduler = build_schedule(optimizer, resolved.lr_scheduler, int(resolved.warmup_ratio * total_steps), total_steps)
    state = TrainerState()
    if checkpoint_found is not None:
        state = load_training_state(checkpoint_found, load_optimizer_state(wrapped, optimizer), scheduler)
        if place.main:
            artifacts.truncate_metrics(run_dir / "metrics.csv", state.step)
        reporter.resumed(run_id)

    validation_batches, fillers = (
        ([], set()) if preference else _validation_batches(validation_set, resolved, pad_id, place, device)
    )
    general_batches, general_fillers = _validation_batches(general_set, resolved, pad_id, place, device)
    loss_module = unwrapped(wrapped)
    # DDP's forward is for training steps (it prepares the gradient reduction); FSDP2's gathers
    # the shards, which every forward needs.
    validation_loss = wrapped if is_sharded(wrapped) else loss_module
    token_loss = TokenLoss(model, resolved) if preference else loss_module  # the general prompts' scorer
    metrics_file = (run_dir / "metrics.csv").open("a", newline="") if place.main else None
    columns = METRIC_COLUMNS + (DPO_STEP_FIELDS + DPO_VALID_FIELDS if preference else [])
    writer = csv.DictWriter(metrics_file, columns) if metrics_file else None
    if metrics_file and metrics_file.tell() == 0:
        writer.writeheader()
    reporter.start(run_id, resolved, total_steps, state.step)
    started, stopped_early, interrupted = time.perf_counter(), False, False
    # The glibc heap guard is for the CPU's allocator (host_memory.py); a GPU's lives in PyTorch's.
    heap_guard = HeapGrowthGuard() if device_type(device) == "cpu" else None
    last_evaluation: dict = {}

    def write(row: dict) -> None:
        if writer:
            writer.writerow(row)
            metrics_file.flush()

    def validate(row: dict) -> bool:
        """Add validation metrics to this step's row; True when they are the best so far."""
        nonlocal last_evaluation

        def scored(batches, fillers) -> dict:
            return evaluate(
                token_loss,
                batches,
                device=device,
                loss_of=token_loss if preference else validation_loss,
                combine=lambda totals: distributed.sum_over_ranks(totals, device),
                fillers=fillers,
            )

        last_evaluation = (
            dpo.evaluate_preferences(loss_module, validation_set, resolved, pad_id, device)
            if preference
            else scored(validation_batches, fillers)
        )
        if general_batches:
            general_scores = scored(general_batches, general_fillers)
            last_evaluation |= {
                "general_loss": general_scores["valid_loss"],
                "general_perplexity": general_scores["valid_perplexity"],
            }
            if state.base_general_loss is None:
                state.base_general_loss = general_scores["valid_loss"]
        reshard(wrapped)
        state.last_validated = state.step
        row.update({name: round(value, 6) for name, value in last_evaluation.items()})
        reporter.evaluation(row)
        if state.step == 0:
            return False  # the base model: a reference point, not a checkpoint to keep
        loss, best = last_evaluation["valid_loss"], state.best_valid_loss
        # A new best is kept (its checkpoint is the run's result if nothing beats it); only a gain of
        # early_stopping_threshold (relative) and early_stopping_min_delta (absolute) resets the patience.
        improved = best is None or loss < best - 1e-6
        progressed = made_progress(loss, best, resolved.early_stopping_threshold, resolved.early_stopping_min_delta)
        if improved:
            state.best_valid_loss, state.best_step = loss, state.step
        state.evaluations_without_improvement = 0 if progressed else state.evaluations_without_improvement + 1
        return improved

    def checkpoint(epoch_end: bool) -> None:
        if is_sharded(wrapped) or place.main:  # FSDP2 gathers the shards from every rank
            weights, optimizer_state = gathered_state(wrapped, optimizer)
        if place.main:
            path = save_checkpoint(
                checkpoints_dir / f"step-{state.step}",
                model,
                optimizer_state,
                scheduler,
                state,
                last_evaluation or None,
                epoch_end,
                weights,
            )
            reporter.checkpoints_kept(
                run_id, artifacts.prune_checkpoints(checkpoints_dir, resolved.keep_checkpoints, state.best_step)
            )
            reporter.checkpoint(state.step, path)
        distributed.barrier()

    if validation_set and state.step == 0:
        # The base model's validation loss: where the curve starts, and what tuning must beat.
        row = {"step": 0, "epoch": 0.0}
        validate(row)
        write(row)
    batches, batches_epoch = [], None
    lengths = [len(e.input_ids) for e in train_set] if resolved.group_by_length else None
    with stop_requests() as stop:
        while state.epoch < resolved.n_epochs:
            if batches_epoch != state.epoch:
                batches, batches_epoch = (
                    epoch_order(len(train_set), resolved.batch_size, resolved.seed, state.epoch, lengths, sources),
                    state.epoch,
                )
            step_started = time.perf_counter()
            step_examples = [train_set[i] for i in batches[state.batch_in_epoch]]
            if preference:
                sums, total_weight, trained = dpo.preference_step(
                    wrapped, step_examples, resolved, pad_id, device, place
                )
            else:
                *summed, total_weight = train_step(wrapped, step_examples, resolved, pad_id, device, place)
                sums, trained = dict(zip(("loss", "correct", "counted", "tokens"), summed)), total_weight
            torch.nn.utils.clip_grad_norm_(trained_parameters, resolved.max_grad_norm)
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if heap_guard:
                heap_guard.after_step()
            synchronize(device)  # a GPU runs behind the host: time the step's work, not its queueing
            stop_here = stop["stop"] or (place.main and reporter.should_stop())
            *summed, stops = distributed.sum_over_ranks([*sums.values(), float(stop_here)], device)
            sums = dict(zip(sums, summed))
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
                **(
                    dpo.train_row(sums)
                    if preference
                    else {
                        "train_loss": round(sums["loss"] / total_weight, 6),
                        "train_accuracy": round(sums["correct"] / max(sums["counted"], 1), 6),
                    }
                ),
                "epoch": round(epoch_progress, 4),
                "learning_rate": learning_rate,
                "tokens": int(sums["tokens"]),
                "tokens_per_second": round(sums["tokens"] / (time.perf_counter() - step_started), 1),
                "trained_tokens": int(state.trained_tokens),
            }
            due = validation_due(
                state.step,
                resolved.eval_every_steps,
                0 if epoch_end else len(batches) - state.batch_in_epoch,
                total_steps - state.step,
                state.last_validated,
            )
            improved = validate(row) if validation_set and due else False
            write(row)
            reporter.step(row)
            if epoch_end or improved:
                checkpoint(epoch_end)
            if stops:
                interrupted = True
                if not (epoch_end or improved):
                    checkpoint(False)  # mid-epoch: save exactly where we are
                break
            if resolved.max_steps and state.step >= resolved.max_steps:
                break
            if (
                resolved.early_stopping_patience
                and state.evaluations_without_improvement >= resolved.early_stopping_patience
                and state.step < total_steps  # at the last step the run ends anyway: not early
            ):
                stopped_early = True
                break
    if metrics_file:
        metrics_file.close()
    wall = time.perf_counter() - started

    if interrupted:
        reporter.interrupted(run_id, int(state.trained_tokens))
        raise TrainingInterrupted(
            f"run {run_id} stopped at step {state.step}; a checkpoint was saved",
            fix=f"Resume with: tuneforge train --resume {run_id}",
        )
    best = resolved.early_stopping_patience and state.best_step is not None and state.best_step != state.step
    if best:  # the run's result is its best checkpoint, with that checkpoint's validation figures
        best_checkpoint = checkpoints_dir / f"step-{state.best_step}"
        if is_sharded(wrapped):  # every rank holds a shard: each reads the checkpoint rank 0 wrote
            load_full_weights(wrapped, artifacts.read_full_weights(best_checkpoint))
        elif place.main:  # rank 0 alone writes the result; another machine may not see the checkpoint
            artifacts.load_weights(model, best_checkpoint, resolved.method)
        if place.main:
            last_evaluation = artifacts.checkpoint_metrics(best_checkpoint) or last_evaluation
    weights = gathered_weights(wrapped)  # every rank, when sharded
    final = {
        "step": state.step,
        "trained_tokens": int(state.trained_tokens),
        "wall_seconds": round(wall, 1),
        "best_step": state.best_step,
        "stopped_early": stopped_early,
        "processes": place.world,
        "device": device_type(device),
        **peak_memory(device),
        **last_evaluation,
        **_guard_summary(state, replayed, last_evaluation),
    }
    result = RunResult(run_id, run_dir, model_name, resolved, final, stopped_early)
    if place.main:
        artifacts.write_run(
            run_dir,
            model,
            hf_tokenizer,
            resolved,
            model_name,
            final,
            train_file,
            validation_file,
            weights,
            held_out,
            replayed,
        )
        reporter.finished(result, artifacts.weights_dir(run_dir, resolved.method))
    distributed.barrier()
    return result


def train_step(
    wrapped, examples, config: ResolvedConfig, pad_id: int, device: str = "cpu", place: Ranks = Ranks()
) -> tuple[float, int, int, int, float]:
    """This rank's forward and backward passes of one optimiser step, in `gradient_accumulation_steps`
    micro-batches: (weighted loss sum, correct, counted, tokens) of its share, and the whole step's
    loss weight.

    Each micro-batch's weighted loss is divided by the whole step's loss weight (times the ranks,
    whose gradients DDP and FSDP average), so accumulating micro-batches, and adding up ranks, gives
    the same gradient as one big batch in one process (distributed.py)."""
    total_weight = sum(float(e.loss_weights[1:].sum()) for e in examples)
    pieces = distributed.micro_batches(
        distributed.share(examples, place), len(examples), config.gradient_accumulation_steps, place
    )
    loss_sum, correct, counted, tokens = 0.0, 0, 0, 0
    share = config.shared_prefix and shares_prefix_on(device)
    for index, (chunk, scale) in enumerate(pieces):
        batch = make_batch(chunk or examples[:1], pad_id, config.padding_free, share)  # a filler counts for nothing
        with gradient_sync(wrapped, index == len(pieces) - 1):
            weighted, right, n = wrapped(batch.to(device))
            (weighted * (scale * place.world) / total_weight).backward()
        if scale:
            loss_sum, correct, counted, tokens = (
                loss_sum + weighted.item(),
                correct + right,
                counted + n,
                tokens + batch.tokens,
            )
    return loss_sum, correct, counted, tokens, total_weight


def _guard_summary(state: TrainerState, replayed, evaluation: dict) -> dict:
    """The forgetting guard's figures for the final metrics: the general prompts' loss before tuning,
    and their perplexity change (above 0: the model got worse at them)."""
    summary = {"replay_examples": replayed.examples if replayed else 0}
    if state.base_general_loss is not None and "general_loss" in evaluation:
        summary["base_general_loss"] = state.base_general_loss
        summary["general_perplexity_change"] = math.exp(evaluation["general_loss"] - state.base_general_loss) - 1
    return summary


def read_examples(file, tokenizer: ChatTokenizer, purpose: str, config: TrainConfig) -> tuple[list, str]:
    """A data file's examples for the run's objective, and their kind: token ids with loss weights
    for SFT (from the token cache when it has them), preference pairs for DPO."""
    if config.objective == "dpo":
        return dpo.tokenize_pairs(load_examples(file.path, purpose), tokenizer, file.path), "preference"
    return tokenized_file(file, tokenizer, purpose, config.cache_tokens)


def make_batch(examples, pad_id: int, padding_free: bool, share_prefix: bool = False) -> Batch:
    return collate_padding_free(examples, share_prefix) if padding_free else collate(examples, pad_id)


def _validation_batches(validation_set, config: ResolvedConfig, pad_id: int, place: Ranks, device: str = "cpu"):
    """This rank's validation batches, and which of them are fillers (every rank runs as many).
    Sorted by length, so each batch pads little; the order does not change the weighted mean.
    Their shared prefixes are laid once where training's are (short answers' 75 validation
    examples: 1.67 -> 1.31 s a validation, the general probes 0.61 -> 0.50 s). A batch holds the
    training step's examples, or more while they fill no more than a step's auto token budget
    (TOKENS_PER_STEP): a forward pass keeps nothing for backward, and fewer, fuller batches run
    faster (short answers, 52 tokens an example, with the general probes: 5 + 2 batches 1.61 s a
    validation, 2 + 1 batches 1.25 s)."""
    ordered = sorted(validation_set, key=lambda e: len(e.input_ids))
    mean_tokens = sum(len(e.input_ids) for e in ordered) / max(len(ordered), 1)
    step_tokens = TOKENS_PER_STEP.get(device_type(device), TOKENS_PER_STEP["cpu"])
    size = max(config.batch_size, int(step_tokens / max(mean_tokens, 1.0)))
    share = config.shared_prefix and shares_prefix_on(device)
    batches = [
        make_batch(ordered[i : i + size], pad_id, config.padding_free, share) for i in range(0, len(ordered), size)
    ]
    if not place.distributed or not batches:
        return batches, frozenset()
    mine = batches[place.rank :: place.world]
    most = -(-len(batches) // place.world)
    fillers = frozenset(range(len(mine), most))
    return mine + [batches[0]] * (most - len(mine)), fillers
