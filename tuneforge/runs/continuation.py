"""Training on from a tuned model: `tuneforge train --model ft:...` (or a run id), `model: "ft:..."` in
the jobs API. The one place that turns such a name into what the recipe loads.

A LoRA-tuned parent's adapter is trained further (not merged with a new adapter on top): the child
starts from the parent's adapter weights, on the parent's base model, with the parent's LoRA shape.
So the child is again one adapter on the original base: it serves, exports and swaps in like any
other (one base model in memory for parent and child, vLLM's multi-LoRA too), and its lineage is a
plain chain. The price is that the child keeps the parent's rank and target modules; a run that
asks for others is refused and told to merge first (`tuneforge export --merged`, then train from
that directory), as is full fine-tuning from a LoRA parent.

A fully tuned parent is a model directory (its weights and tokenizer): the child trains from it as
from any local model, with LoRA or full weights.

A DPO run started this way has the parent as its reference (dpo.py: the model as the run starts),
the SFT -> DPO flow. The run records the parent's run id as `continued_from` (its config, the
registry's lineage and the model card); the recorded `model` is what was loaded.
"""

from pathlib import Path

from tuneforge.errors import InvalidOption, UsageError
from tuneforge.registry import store
from tuneforge.runs import stored
from tuneforge.runs.naming import is_tuned_name
from tuneforge.runs.ownership import NotOwned, owned_tuned_model
from tuneforge.train.config import LORA_SETTINGS, RECORDED, ResolvedConfig, TrainConfig


def continue_from(config: TrainConfig, project: str) -> TrainConfig:
    """`config` unchanged when its model is a base model; else the config that starts from the tuned
    model it names (which must be `project`'s): model, LoRA shape and continued_from filled in."""
    if not is_tuned_name(config.model):
        return config
    try:
        model = owned_tuned_model(project, config.model)
    except NotOwned:
        model = None
    if model is None:
        raise UsageError(
            f"no tuned model or run named '{config.model}' to train on from",
            fix="See `tuneforge models list` and `tuneforge runs list` (a checkpoint name cannot be continued yet).",
        )
    parent_run = store.get_run(model.run_id)
    weights = stored.weights(parent_run, model)  # fetched from the store where this machine lacks them
    if not weights.exists():
        raise UsageError(f"the weights of '{model.name}' are missing ({model.path})")
    parent = ResolvedConfig.model_validate(parent_run.config, context=RECORDED)
    updates: dict = {"continued_from": model.run_id}
    if model.kind == "full":
        updates["model"] = str(weights)
    else:
        if config.method == "full":
            raise InvalidOption(
                f"'{config.model}' is a LoRA adapter; full fine-tuning from it needs its merged weights",
                param="method",
                fix=f"Merge it with `tuneforge export {model.run_id} --merged DIR`, then train with --model DIR.",
            )
        for name in LORA_SETTINGS:
            if name in config.model_fields_set and getattr(config, name) != getattr(parent, name):
                raise InvalidOption(
                    f"{name}={getattr(config, name)}: '{config.model}' is trained further as it is, with its own "
                    f"{name}={getattr(parent, name)}",
                    param=name,
                    fix=f"Leave {name} out, or merge it first (`tuneforge export {model.run_id} --merged DIR`) and "
                    "train a new adapter with --model DIR.",
                )
            updates[name] = getattr(parent, name)
        updates["model"] = parent.model
    return TrainConfig.model_validate({**config.model_dump(), **updates}, context=RECORDED)


def model_to_load(name: str, project: str) -> str:
    """What a job's data check loads for its tokenizer and model facts: a tuned model's base (or a
    fully tuned one's own directory); any other name as it is."""
    try:
        model = owned_tuned_model(project, name) if is_tuned_name(name) else None
    except NotOwned:
        model = None
    if model is None:
        return name
    return str(stored.weights(store.get_run(model.run_id), model)) if model.kind == "full" else model.base_model


def parent_adapter(config: TrainConfig) -> Path | None:
    """The adapter a continued LoRA run starts from (None for a run that continues nothing, or a
    fully tuned parent, whose weights are the model it loads)."""
    if not config.continued_from:
        return None
    run = store.get_run(config.continued_from)
    model = run.models[0] if run and run.models else None
    if model is None:
        raise UsageError(f"run '{config.continued_from}', which this run continues, has no model any more")
    return stored.weights(run, model) if model.kind == "adapter" else None


def name_base(config: TrainConfig) -> str:
    """The base model a tuned model's name shows: a continued run's original base, not a run directory."""
    run = store.get_run(config.continued_from) if config.continued_from else None
    return run.models[0].base_model if run and run.models else config.model


def resume_config(run_id: str) -> TrainConfig:
    """The config a run was started with, to continue it (`tuneforge train --resume RUN_ID`)."""
    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run '{run_id}'", fix="See `tuneforge runs list`.")
    # A run recorded before validation_split (or the forgetting guard) existed held nothing out (and
    # replayed nothing): resume it the same way.
    recorded = {"validation_split": 0.0, "forgetting_guard": False, **run.config}
    return TrainConfig.model_validate(
        {k: v for k, v in recorded.items() if k in TrainConfig.model_fields}, context=RECORDED
    )
