"""The forgetting guard's prompts for a run (tuneforge/train/general.py says what the recipe does with them).

- probes: the evaluation's forgetting probes (general prompts with reference answers), scored at
  every validation. The same set `tuneforge eval` uses, so the curve during training and the
  evaluation afterwards measure the same thing.
- replay: the base model's own answers to `replay_prompts.jsonl`, a built-in set of diverse
  general prompts that shares no question with any probe set (tests/test_replay_prompts.py checks
  it; otherwise the probes would measure memorisation, not ability). Generated once per base model
  and cached beside the converted models (`settings.model_cache_dir()/replay/`: the answers derive from
  the base model as its conversion does), so a second run, a resume, and every process of a
  distributed run read the same answers. The prompts are answered REPLAY_BLOCK at a time, and only
  as many blocks as a run's replay share needs: the quickstart's small file needs the first.

Why sampled answers (temperature 1), not greedy ones: training on samples of the base is, in
expectation, training toward the base's whole distribution (the gradient of the KL divergence to it,
zero at the base), so replay anchors the tuned model without changing it. Greedy answers are the
base's single likeliest reply: training on them sharpens the model toward it, and the probes'
reference answers, which are not those replies, lose probability. Measured on the short-answers task
(benchmarks/RESULTS.md, 2026-12-02 afternoon): with the same 469 prompts and share, greedy replay
left the probes' perplexity +40.9 % above the base's, sampled replay +6.9 %, at a higher accuracy.
Some samples of a small base model are rambling or garbled; they are its distribution all the same,
and what keeps the tuned model near it.

Which answers are kept: only complete ones (an answer cut at the token limit would teach the model
not to stop), and on the general prompts no refusal (so it does not learn to decline more). On the
"refusal" prompts (requests a careful assistant declines) the answer is the base's own refusal, or,
where the base complied or rambled, DECLINE: a small base model refuses few of them (SmolLM2-135M
refused 1 of 16 here), and replaying its compliance would teach the tuned model to comply.
"""

import hashlib
import json
import logging
import os
from importlib import resources
from pathlib import Path

from tuneforge.data.examples import Conversation, Message
from tuneforge.evaluate.probes import REFUSAL_RE, load_probe_sets
from tuneforge.settings import model_cache_dir
from tuneforge.train.config import TrainConfig
from tuneforge.train.general import GeneralAbility, ReplayExample
from tuneforge.train.inputs import locate_data

REPLAY_PROMPTS = resources.files("tuneforge.runs") / "replay_prompts.jsonl"
REPLAY_MAX_NEW_TOKENS = 160  # general answers of a few sentences; longer ones are cut and dropped
REPLAY_TEMPERATURE = 1.0  # samples of the base's own distribution (see above)
GENERATION_BATCH = 16
REPLAY_BLOCK = 160  # prompts answered (and cached) at a time; a multiple of GENERATION_BATCH
CACHE_FORMAT = 3  # bump when what is cached, or how it is chosen, changes
log = logging.getLogger(__name__)
DECLINE = "I'm sorry, but I can't help with that."


def general_ability(config: TrainConfig) -> GeneralAbility | None:
    """What the recipe needs for `config`'s forgetting guard; None when the guard is off."""
    if not config.forgetting_guard:
        return None
    probes = [
        Conversation([Message("user", item.prompt), Message("assistant", item.reference)])
        for item in load_probe_sets().forgetting
    ]
    if config.replay_share <= 0:
        return GeneralAbility(probes)

    def replay(wanted: int | None = None) -> list[ReplayExample]:
        """The replay answers of as many blocks as give `wanted` of them (all blocks when None)."""
        examples: list[ReplayExample] = []
        for block in range(replay_blocks()):
            path = replay_file(config.model, config.device, block)
            examples += [
                ReplayExample(
                    Conversation([Message("user", record["prompt"]), Message("assistant", record["answer"])]),
                    declines=record["category"] == "refusal",
                )
                for record in map(json.loads, path.read_text().splitlines())
            ]
            if wanted is not None and len(examples) >= wanted:
                break
        return examples

    return GeneralAbility(probes, replay, f"sampled once from {config.model} and cached")


def replay_wanted(config: TrainConfig) -> int:
    """At most how many replay examples `config`'s run mixes in: its share of the training file's
    lines (a bound: held-out and blank lines train nothing). What a launcher generates before the
    processes start, so that none of them generates a block on its own."""
    train, _ = locate_data(Path(config.data), None)
    with train.path.open(encoding="utf-8") as lines:
        return max(1, round(config.replay_share * sum(1 for line in lines if line.strip())))


def replay_blocks() -> int:
    return -(-len(replay_prompts()) // REPLAY_BLOCK)


def replay_file(model: str, device: str = "auto", block: int = 0) -> Path:
    """The cached replay answers of `model` to the prompts of `block` (JSON lines: id, category,
    prompt, answer), generated on `device` the first time."""
    first = block * REPLAY_BLOCK
    prompts = replay_prompts()[first : first + REPLAY_BLOCK]
    path = _cache_dir() / f"{_cache_key(model, prompts)}.jsonl"
    if path.exists():
        return path
    log.info(
        "forgetting guard: sampling %s's answers to %d general prompts for replay (once per base model; "
        "the bundled model takes about a minute on a laptop CPU)",
        model,
        len(prompts),
    )
    records = _generate_replay(model, device, prompts, first)
    staging = path.with_suffix(f".{os.getpid()}.partial")  # written whole, then renamed: never half a file
    staging.write_text("".join(json.dumps(record) + "\n" for record in records))
    staging.replace(path)
    return path


def replay_prompts() -> list[dict]:
    return [json.loads(line) for line in REPLAY_PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]


def replay_answer(category: str, answer: str, finish_reason: str) -> str | None:
    """What to replay for the base's `answer` to a prompt of `category`; None to leave the prompt out."""
    complete = finish_reason == "stop" and answer.strip()
    refused = bool(REFUSAL_RE.search(answer))
    if category == "refusal":
        return answer if complete and refused else DECLINE
    return answer if complete and not refused else None


def _generate_replay(model: str, device: str, prompts: list[dict], first: int) -> list[dict]:
    """Sampled answers, seeded by each batch's place in the whole prompt set (`first` is the
    block's): the same answers whichever blocks were generated before."""
    from tuneforge.runs.models import engine

    generator = engine(model, device=device)
    records = []
    for start in range(0, len(prompts), GENERATION_BATCH):
        batch = prompts[start : start + GENERATION_BATCH]
        answers = generator.generate(
            [[Message("user", item["prompt"])] for item in batch],
            max_new_tokens=REPLAY_MAX_NEW_TOKENS,
            temperature=REPLAY_TEMPERATURE,
            seed=first + start,
        )
        for item, answer in zip(batch, answers):
            kept = replay_answer(item["category"], answer.text, answer.finish_reason)
            if kept is not None:
                records.append({**item, "answer": kept})
    return records


def _cache_dir() -> Path:
    path = model_cache_dir() / "replay"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cache_key(model: str, prompts: list[dict]) -> str:
    """The base model (by name, and by its files' sizes and times when it is a local directory), the
    block's prompts and the generation settings: any change generates the answers again."""
    from tuneforge.models.catalog import resolve_model

    location = Path(resolve_model(model).location or "")
    files = (
        sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in location.iterdir() if p.is_file())
        if location.is_dir()
        else []
    )
    identity = {
        "format": CACHE_FORMAT,
        "model": model,
        "files": files,
        "prompts": hashlib.sha256(json.dumps(prompts, sort_keys=True).encode()).hexdigest(),
        "max_new_tokens": REPLAY_MAX_NEW_TOKENS,
        "temperature": REPLAY_TEMPERATURE,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
