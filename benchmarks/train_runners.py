"""The three trainers `benchmarks/train.py` compares, each run the same way on the same data.

- `run_trl`: TRL's `SFTTrainer` with a PEFT `LoraConfig` (or full fine-tuning), options set explicitly
  (packing, padding-free, optimiser, Liger kernels, gradient checkpointing, a 4-bit base: the row's settings).
- `run_plain`: the loop a practitioner writes with transformers + PEFT: padded batches, the model's own
  loss, AdamW, clipping.
- `run_tuneforge`: Tuneforge's `train_sft`, with whatever `TrainConfig` speed flags the row sets.

Each returns per-step wall times, tokens and losses plus the trained model's validation loss, which
one function (`validation_loss`) computes for all three, so the losses compare like for like.

Settings every runner reads (besides the method, precision and loss weights): `model` (a catalog
name or a local model directory; default the bundled model), `device` ("cpu" unless a row says
"cuda"; on a GPU the step timers synchronise it and `gpu_peak_mb` is torch's peak allocation) and
`validate` (False skips the validation pass: `benchmarks/gpu.py` on a randomly initialised model).
"""

import json
import random
import time
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "support_chat.jsonl"
MODEL = "smollm2-135m-instruct"
LEARNING_RATE = {"lora": 2e-4, "full": 1e-5}  # Tuneforge's defaults: base rate x multiplier 0.1
SEED = 42


# ------------------------------------------------------------------------------------- data
def build_data(
    directory: Path, seq_len: int, n_train: int, n_validation: int, model: str = MODEL
) -> tuple[Path, Path]:
    """Multi-turn support chats of close to `seq_len` tokens, from examples/support_chat.jsonl.

    The benchmark asks for batches of 8 x `seq_len` tokens; single chats there are ~120 tokens, so
    each synthetic chat is the common system prompt plus (user, assistant) exchanges drawn from the
    file, seeded, added while the rendered chat still fits `seq_len`. Every trainer then sees the
    same examples, each about `seq_len` long, so packing neither helps nor hurts one of them by
    more than the last few tokens of padding. Validation chats come from held-out source lines.
    `model` names whose tokenizer and chat template measure the lengths (any with SmolLM2's tokenizer
    gives the same chats)."""
    from tuneforge.models.catalog import load_tokenizer

    tokenizer = load_tokenizer(model)
    records = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    system = records[0]["messages"][0]

    def length(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    def compose(sources: list[dict], count: int, seed: int) -> list[dict]:
        exchanges = [r["messages"][1:] for r in sources]  # multi-turn sources stay together
        sizes = [length([system] + e) - length([system]) for e in exchanges]
        system_size, rng, chats = length([system]), random.Random(seed), []
        while len(chats) < count:
            pool = list(range(len(exchanges)))
            rng.shuffle(pool)
            while pool and len(chats) < count:
                chosen, used = [], system_size
                for index in list(pool):  # best fit: take any exchange that still fits
                    if used + sizes[index] <= seq_len:
                        chosen.append(index)
                        used += sizes[index]
                        pool.remove(index)
                if not chosen:
                    break
                chats.append({"messages": [system] + [m for i in chosen for m in exchanges[i]]})
        return chats

    held_out = max(8, len(records) // 10)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, sources, count in (
        ("train", records[:-held_out], n_train),
        ("validation", records[-held_out:], n_validation),
    ):
        path = directory / f"{name}.jsonl"
        path.write_text("".join(json.dumps(chat, ensure_ascii=False) + "\n" for chat in compose(sources, count, SEED)))
        paths.append(path)
    return paths[0], paths[1]


def read_chats(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tokenized(path: Path, prompt_loss_weight: float, seq_len: int, model: str = MODEL):
    from tuneforge.data.tokenize import ChatTokenizer
    from tuneforge.models.catalog import load_tokenizer
    from tuneforge.train.inputs import load_examples, tokenize_for_sft

    tokenizer = ChatTokenizer(load_tokenizer(model), prompt_loss_weight, seq_len)
    return tokenize_for_sft(load_examples(path, "validation"), tokenizer, path)


def validation_loss(model, validation: Path, prompt_loss_weight: float, seq_len: int, name: str = MODEL) -> float:
    """The same measurement for every trainer's result: Tuneforge's `evaluate` in fp32 (weighted mean
    cross-entropy per token over the held-out chats), on the CPU. `name` is the base model's name,
    for its tokenizer."""
    from tuneforge.models.catalog import load_tokenizer
    from tuneforge.train.loop import collate, evaluate

    examples = tokenized(validation, prompt_loss_weight, seq_len, name)
    pad_id = load_tokenizer(name).pad_token_id
    batches = [collate(examples[i : i + 8], pad_id) for i in range(0, len(examples), 8)]
    return evaluate(model.float().cpu(), batches)["valid_loss"]


def peak_rss_mb() -> float:
    """This process's peak RSS so far; each runner reads it when training ends, before the
    validation pass (the same for every row) can raise it."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def lora_config(dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def load_base(name: str = MODEL, dtype=None):
    from tuneforge.models.catalog import load_model

    return load_model(name, dtype)


def load_base_4bit(name: str, device: str):
    """QLoRA's base: the weights quantised to NF4 (double quantisation, bf16 compute) by bitsandbytes
    as they load, placed on `device` (bitsandbytes quantises on the GPU)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tuneforge.models.catalog import model_path, resolve_model

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"skipped: bitsandbytes does not import ({error})") from None
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    return AutoModelForCausalLM.from_pretrained(
        model_path(resolve_model(name)),
        quantization_config=quantization,
        dtype=torch.bfloat16,
        device_map={"": torch.device(device).index or 0} if device.startswith("cuda") else {"": device},
    )


def synchronize(device: str) -> None:
    """A GPU queues work: wait for it before reading a clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_gpu_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mb(device: str) -> float | None:
    """torch's peak GPU allocation in this process (None on the CPU)."""
    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def liger_imports() -> str | None:
    """None when liger-kernel imports, else why not."""
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception as error:  # ImportError, or triton failing to find a GPU driver
        return f"{type(error).__name__}: {error}"
    return None


# ------------------------------------------------------------------------------ the runners
def run_trl(settings: dict, train: Path, validation: Path, steps: int, batch_size: int, seq_len: int) -> dict:
    """TRL's SFTTrainer. Row settings (defaults: the options the benchmark first ran with):
    `packing` (True; TRL 1.16 packs with bfd and then always runs padding-free), `padding_free` (False:
    one flattened row per batch without packing), `optim` ("adamw_torch"; SFTConfig's own default is
    "adamw_torch_fused"), `use_liger_kernel` (False), `gradient_checkpointing` (False),
    `base_dtype` ("fp32", or "bf16": LoRA's frozen base loaded in bf16, the adapters fp32),
    `load_in_4bit` (False: QLoRA, an NF4 base through bitsandbytes), `attn_implementation` (the model's default)."""
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        raise SystemExit("TRL is not installed: pip install -e '.[bench]'") from None
    from tuneforge.models.catalog import load_tokenizer

    method, bf16, packing = settings["method"], settings["precision"] == "bf16", settings.get("packing", True)
    name, device = settings.get("model", MODEL), settings.get("device", "cpu")
    padding_free = settings.get("padding_free", False)
    liger = settings.get("use_liger_kernel", False)
    if liger and (why := liger_imports()):
        raise SystemExit(f"skipped: liger-kernel does not import ({why})")
    checkpointing = settings.get("gradient_checkpointing", False)
    config = SFTConfig(
        output_dir=str(train.parent / "trl-output"),
        use_cpu=device == "cpu",
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=SEED,
        data_seed=SEED,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=LEARNING_RATE[method],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim=settings.get("optim", "adamw_torch"),
        # SFTConfig's defaults are bf16=True and gradient_checkpointing=True: both set on purpose.
        bf16=bf16,
        fp16=False,
        gradient_checkpointing=checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        use_liger_kernel=liger,
        packing=packing,
        packing_strategy="bfd",
        padding_free=padding_free,
        # Padding-free without packing does not truncate, and TRL refuses a max_length then; the
        # chats are built to fit seq_len anyway.
        max_length=None if padding_free and not packing else seq_len,
        dataloader_num_workers=0,
    )
    timings: dict = {"begin": [], "end": [], "tokens": [], "trained": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            synchronize(device)
            timings["begin"].append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            synchronize(device)
            timings["end"].append(time.perf_counter())

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            labels = inputs["labels"]
            real = inputs["attention_mask"].sum() if "attention_mask" in inputs else labels.numel()
            timings["tokens"].append(int(real))
            timings["trained"].append(int((labels[:, 1:] != -100).sum()))
            return super().training_step(model, inputs, num_items_in_batch)

    if settings.get("load_in_4bit"):
        model = load_base_4bit(name, device)
    else:
        model = load_base(name, torch.bfloat16 if settings.get("base_dtype") == "bf16" else None)
    if settings.get("attn_implementation"):
        model.set_attn_implementation(settings["attn_implementation"])
    reset_gpu_peak(device)
    trainer = CountingTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(read_chats(train)),
        processing_class=load_tokenizer(name),
        callbacks=[Timer()],
        peft_config=lora_config(settings["lora_dropout"]) if method == "lora" else None,
    )
    trainer.train()
    training_peak, gpu_peak = peak_rss_mb(), gpu_peak_mb(device)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    validate = settings.get("validate", True)
    return {
        "step_seconds": [e - b for b, e in zip(timings["begin"], timings["end"])],
        "step_tokens": timings["tokens"],
        "step_trained": timings["trained"],
        "train_losses": losses,
        "train_peak_rss_mb": training_peak,
        "gpu_peak_mb": gpu_peak,
        "valid_loss": validation_loss(trainer.model, validation, settings["prompt_loss_weight"], seq_len, name)
        if validate
        else None,
    }


def run_plain(settings: dict, train: Path, validation: Path, steps: int, batch_size: int, seq_len: int) -> dict:
    """What most hand-written loops look like: pad each batch, labels -100 where no loss, the
    model's own mean cross-entropy over full logits, optional bf16 autocast."""
    from peft import get_peft_model

    from tuneforge.models.catalog import load_tokenizer

    torch.manual_seed(SEED)
    name = settings.get("model", MODEL)
    method, pad_id = settings["method"], load_tokenizer(name).pad_token_id
    model = load_base(name)
    if method == "lora":
        model = get_peft_model(model, lora_config(settings["lora_dropout"]))
    model.train()
    examples = tokenized(train, settings["prompt_loss_weight"], seq_len, name)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(SEED)).tolist()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE[method], weight_decay=0.0
    )
    dtype = torch.bfloat16 if settings["precision"] == "bf16" else torch.float32
    result: dict = {"step_seconds": [], "step_tokens": [], "step_trained": [], "train_losses": []}
    for step in range(steps):
        chosen = [examples[order[(step * batch_size + i) % len(examples)]] for i in range(batch_size)]
        length = max(len(e.input_ids) for e in chosen)
        ids = torch.full((batch_size, length), pad_id)
        mask = torch.zeros((batch_size, length), dtype=torch.long)
        labels = torch.full((batch_size, length), -100)
        for row, example in enumerate(chosen):
            n = len(example.input_ids)
            ids[row, :n], mask[row, :n] = torch.tensor(example.input_ids), 1
            labels[row, :n] = torch.where(torch.from_numpy(example.loss_weights) > 0, ids[row, :n], -100)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype == torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result["step_seconds"].append(time.perf_counter() - started)
        result["step_tokens"].append(int(mask.sum()))
        result["step_trained"].append(int((labels[:, 1:] != -100).sum()))
        result["train_losses"].append(loss.item())
    result["train_peak_rss_mb"] = peak_rss_mb()
    result["valid_loss"] = validation_loss(model, validation, settings["prompt_loss_weight"], seq_len, name)
    return result


# Runner settings that are no TrainConfig field.
RUNNER_ONLY = ("trainer", "label", "validate")
# TrainConfig fields that not every checkout has yet (the device seam): sent only where they exist.
NEWER_FIELDS = ("device", "gradient_checkpointing", "load_in_4bit", "liger_kernels")


def tuneforge_flags(settings: dict) -> dict:
    """The row's settings as TrainConfig fields. A newer field this checkout lacks is dropped when
    the row asks for what the checkout does anyway (device cpu, a switch off); otherwise the row stops
    with a reason ("skipped: ..."), so that it is never measured doing something else."""
    from tuneforge.train.config import TrainConfig

    flags = {k: v for k, v in settings.items() if k not in RUNNER_ONLY}
    if "validation_split" in TrainConfig.model_fields:
        # Every example trains, as for the other trainers (validation is measured apart, on `validation`).
        flags.setdefault("validation_split", 0.0)
    for name in NEWER_FIELDS:
        if name in flags and name not in TrainConfig.model_fields:
            value = flags.pop(name)
            if value not in ("cpu", False):
                raise SystemExit(
                    f"skipped: TrainConfig has no `{name}` field in this checkout, so Tuneforge cannot run "
                    f"{name}={value!r} here"
                )
    return flags


def run_tuneforge(settings: dict, train: Path, validation: Path, steps: int, batch_size: int, seq_len: int) -> dict:
    from tuneforge.runs.training import train_run
    from tuneforge.train.config import TrainConfig
    from tuneforge.train.reporter import Reporter

    rows = []

    class Collect(Reporter):
        def step(self, row):
            rows.append(row)

    device = settings.get("device", "cpu")
    config = TrainConfig(
        data=train,
        n_epochs=1,
        max_steps=steps,
        batch_size=batch_size,
        max_seq_length=seq_len,
        learning_rate_multiplier=0.1,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=SEED,
        **{"model": MODEL, **tuneforge_flags(settings)},
    )
    reset_gpu_peak(device)
    result = train_run(config, Collect())
    training_peak, gpu_peak = peak_rss_mb(), gpu_peak_mb(device)
    trained = [row["trained_tokens"] for row in rows]
    valid_loss = None
    if settings.get("validate", True):
        if config.method == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_base(config.model), result.run_dir / "adapter")
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(result.run_dir / "model", dtype=torch.float32)
        valid_loss = validation_loss(model, validation, settings["prompt_loss_weight"], seq_len, config.model)
    return {
        "step_seconds": [row["tokens"] / row["tokens_per_second"] for row in rows],
        "step_tokens": [row["tokens"] for row in rows],
        "step_trained": [b - a for a, b in zip([0] + trained[:-1], trained)],
        "train_losses": [row["train_loss"] for row in rows],
        "train_peak_rss_mb": training_peak,
        "gpu_peak_mb": gpu_peak,
        "valid_loss": valid_loss,
    }


RUNNERS = {"trl": run_trl, "plain": run_plain, "tuneforge": run_tuneforge}
