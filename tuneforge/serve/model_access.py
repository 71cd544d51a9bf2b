"""Which models an API caller may name, and whose tuned models are whose.

A request names a model; it never names a path ("untrusted input never picks a path"). A caller may
name only:
  - a catalog model (`smollm2-135m-instruct`),
  - a hub id (`org/name`) already in this machine's Hugging Face cache,
  - a local model directory the operator allowed (`tuneforge serve --allow-model-dir PATH`), by that path,
  - its own project's tuned models (`ft:...`), runs (`run-...`) and checkpoints (`...:ckpt-step-N`).
Anything else answers the same 404 (400 for a job's base model), whatever exists on disk, so the
answers reveal nothing about the server's file system. The CLI is the operator's own door and keeps
accepting paths (`models.catalog.resolve_model`).
"""

import re
from pathlib import Path

from tuneforge.registry import store
from tuneforge.runs import ownership
from tuneforge.runs.naming import is_tuned_name
from tuneforge.serve.protocol import APIError

# huggingface_hub's repo-id rule, spelled out so that no name with `..`, `~` or a leading `/` passes.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def model_not_found(name: str) -> APIError:
    return APIError(
        404,
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def allowed_model_dirs(paths: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The operator's allow-list: each directory by the path as written and by its absolute path -> absolute path.

    Checked when the server starts, so a typo fails there rather than on a user's request."""
    from tuneforge.errors import UsageError

    allowed: dict[str, str] = {}
    for written in paths:
        directory = Path(written).expanduser().resolve()
        if not (directory / "config.json").is_file():
            raise UsageError(f"--allow-model-dir {written}: not a Hugging Face model directory (no config.json)")
        allowed[written] = allowed[str(directory)] = str(directory)
    return allowed


def check_tuned_access(owner: str, name: str) -> None:
    """A tuned model, run or checkpoint of another project (or of none): 404, as if it did not exist."""
    try:
        ownership.check_owned(owner, name)
    except ownership.NotOwned:
        raise model_not_found(name) from None


def cached_hub_id(name: str) -> bool:
    """An `org/name` whose config is in the local Hugging Face cache (nothing is downloaded for a request)."""
    if not HUB_ID.match(name) or ".." in name:
        return False
    # A relative directory of the same name would be loaded instead of the hub model: refuse both.
    if Path(name).exists():
        return False
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def base_model_for_request(name: str, allowed_dirs: dict[str, str]) -> tuple[str, str] | None:
    """(the name to load, its source: bundled | local | hub) for an API caller's base model, or None
    if callers may not name it. Allowed directories come back as their absolute path, so a worker
    started elsewhere finds them too."""
    from tuneforge.models.catalog import BUNDLED

    if name in BUNDLED:
        return name, "bundled"
    if name in allowed_dirs:
        return allowed_dirs[name], "local"
    if cached_hub_id(name):
        return name, "hub"
    return None


def servable_model(owner: str, name: str, allowed_dirs: dict[str, str]) -> str:
    """The name the engine pool loads for a chat/completions/models request by `owner`; 404 otherwise."""
    if is_tuned_name(name):
        check_tuned_access(owner, name)
        return name
    base = base_model_for_request(name, allowed_dirs)
    if base is None:
        raise model_not_found(name)
    return base[0]


def owned_tuned_model(owner: str, name: str) -> store.Model | None:
    """The caller's tuned model by `ft:` name or run id; None if the name is no tuned model's; 404 if
    it is another project's or does not exist."""
    try:
        return ownership.owned_tuned_model(owner, name)
    except ownership.NotOwned:
        raise model_not_found(name) from None


def model_choices(owner: str, allowed_dirs: dict[str, str]) -> list[tuple[str, str]]:
    """(name, source) of every model `owner` may name: installed catalog models, the operator's
    allowed directories, the project's tuned models (source "tuned")."""
    from tuneforge.models.catalog import bundled_installed
    from tuneforge.models.catalog import list_models as base_models

    refs = [ref for ref in base_models() if ref.source != "bundled" or bundled_installed(ref.name)]
    choices = [(ref.name, ref.source) for ref in refs]
    choices += [(path, "local") for path in sorted(set(allowed_dirs.values()))]
    return choices + [(m.name, "tuned") for m in ownership.tuned_models_of(owner)]
