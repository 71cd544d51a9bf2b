"""Inference: turn a `ModelSpec` (what to load) into a loaded model; generate from chat messages or raw text.

A spec is a base model (catalog name, local dir, hub id), optionally with a LoRA adapter directory
or a full fine-tune's weights directory. A LoRA run loads as base + adapter (peft); a full run loads
its own weights; the run's saved tokenizer and chat template are used unchanged. Which run a name
(`run-...`, `ft:...`, a checkpoint) means is the registry's business: `tuneforge.runs.models`.

`Engine` generates (batched, streamed, with stop strings) through the decode loop in decode.py,
with OpenAI's options (penalties, logit_bias, log-probs; JSON `response_format` through constrained.py);
`EnginePool` is the server's cache of engines, sharing one base model between LoRA runs.

Devices (`hardware.resolve_device`: auto, cpu, cuda, cuda:N, mps), resolved once per engine or pool.
On the CPU the model stays fp32 and decodes on the packed fast path (fast_llama.py, in `precision`).
On any other device the model's own forward decodes (`decode.HFStepper`), its weights in bf16 where
the device runs it natively (precision auto or bf16), else fp32; int8 is a CPU path only. Sampling
stays on the CPU either way: the stepper hands back CPU fp32 logits.
"""

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneforge.data.examples import Message
from tuneforge.data.tokenize import ChatTokenizer
from tuneforge.errors import ContextTooLong, InvalidOption, UsageError
from tuneforge.hardware import bf16_is_fast, device_type, resolve_device
from tuneforge.inference.adapters import LoadedAdapter, SharedModel
from tuneforge.inference.decode import BatchDecoder, Sampling
from tuneforge.inference.fast_llama import PRECISIONS, inference_precision
from tuneforge.inference.text import TextAssembler


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user typed
    base_model: str
    adapter: Path | None = None  # LoRA adapter directory
    weights: Path | None = None  # full fine-tuned weights directory

    @property
    def tokenizer_source(self) -> str | None:
        """The run's saved tokenizer; None for the base's (a checkpoint directory holds weights only)."""
        directory = self.adapter or self.weights
        return str(directory) if directory and (directory / "tokenizer_config.json").exists() else None


def base_spec(name: str) -> ModelSpec:
    """A base model (catalog name, local directory or hub id) -> what to load. Runs and tuned models
    are the registry's: `tuneforge.runs.models.resolve_spec` turns their names into specs."""
    from tuneforge.models.catalog import resolve_model

    resolve_model(name)  # raises a clear error for unknown names
    return ModelSpec(name, name)


def load_tokenizer_for(spec: ModelSpec):
    """The run's saved tokenizer (and chat template), or the base model's."""
    from transformers import AutoTokenizer

    from tuneforge.models.catalog import load_tokenizer

    return (
        AutoTokenizer.from_pretrained(spec.tokenizer_source)
        if spec.tokenizer_source
        else load_tokenizer(spec.base_model)
    )


def load_for_inference(spec: ModelSpec, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model in eval mode on `device` with `dtype` weights, Hugging Face tokenizer). `device` is
    resolved already (`hardware.resolve_device`)."""
    from transformers import AutoModelForCausalLM

    from tuneforge.models.catalog import load_model

    if spec.weights is not None:
        model = AutoModelForCausalLM.from_pretrained(spec.weights, dtype=dtype)
    else:
        model = load_model(spec.base_model)
        if spec.adapter is not None:
            from peft import PeftModel

            # Merged once at load time, in fp32 on the host: no per-token adapter overhead while generating.
            model = PeftModel.from_pretrained(model, spec.adapter).merge_and_unload()
    return place(model, device, dtype).eval(), load_tokenizer_for(spec)


def place(model, device: str, dtype: torch.dtype = torch.float32):
    """The model on `device` with `dtype` weights (itself when it is there already)."""
    return model.to(device=device, dtype=dtype)


def device_precision(requested: str, device: str) -> str | None:
    """The weights' precision on a device other than the CPU: bf16 where it runs natively (auto,
    bf16), else fp32; int8 is a UsageError. None on the CPU, where the packed path decides
    (`fast_llama.inference_precision`, once the model is loaded)."""
    if device_type(device) == "cpu":
        return None
    if requested == "int8":
        raise UsageError(
            f"precision int8 on device {device}: int8 weights are a CPU path; use bf16 on a GPU",
            fix="Use --precision bf16 (or auto), or --device cpu for int8.",
        )
    return "bf16" if requested in ("auto", "bf16") and bf16_is_fast(device) else "fp32"


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # of the weights on a device other than the CPU


@dataclass
class _Request:
    prompts: list[list[int]]  # token ids
    budgets: list[int]  # most new tokens per prompt (within the model's context)
    sampling: Sampling
    texts: list[TextAssembler]
    constraints: list | None = None  # per prompt: its response format's matcher (constrained.py)
    logprobs: list[list["TokenLogprob"]] | None = None  # per prompt, when asked for


@dataclass
class TokenLogprob:
    """A generated token's log-prob (see decode.BatchDecoder for which distribution) and the most likely
    alternatives."""

    token: str  # its text; "bytes:\\xe6" when the token holds part of a character (OpenAI's notation)
    bytes: list[int]  # its UTF-8 bytes
    logprob: float
    top_logprobs: list["TokenLogprob"]  # most likely first; empty for the alternatives themselves


class TextDelta(str):
    """A streamed text delta that also carries the log-probs of the tokens decoded since the last delta."""

    logprobs: list[TokenLogprob]

    def __new__(cls, text: str, logprobs: list[TokenLogprob]):
        delta = super().__new__(cls, text)
        delta.logprobs = logprobs
        return delta


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    logprobs: list[TokenLogprob] | None = None  # one per generated token but the end-of-turn, when asked for


class Engine:
    """One model to generate from: chat conversations (`generate`, `stream`) or raw text (`complete`).

    `Engine(name)` loads the model on its own, any adapter merged at load. `EnginePool` builds
    engines that share one base model and switch adapters on it (`shared`, `adapter`). Calls on
    engines that share a model take turns on its `lock`; `stream` holds it while it is iterated.
    """

    def __init__(
        self,
        name: str,
        *,
        precision: str = "auto",
        device: str = "auto",
        spec: ModelSpec | None = None,
        shared: SharedModel | None = None,
        adapter: LoadedAdapter | None = None,
        tokenizer=None,
    ):
        """`device`: auto, cpu, cuda, cuda:N or mps (`hardware.resolve_device`); a `shared` model is on it already."""
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}'", fix=f"Use one of: {', '.join(PRECISIONS)}.")
        self.device = resolve_device(device)
        weights = device_precision(precision, self.device)  # before loading: int8 off the CPU fails here
        self.spec = spec or base_spec(name)
        if shared is None:
            model, tokenizer = load_for_inference(self.spec, self.device, DTYPES[weights or "fp32"])
            shared = SharedModel(model)
        self.shared, self.adapter, self.tokenizer = shared, adapter, tokenizer
        self.chat = ChatTokenizer(self.tokenizer)
        self.stop_ids = self.chat.end_of_turn_ids
        # The tokenizer may be shared (cached) with the rest of the process: read, never change it.
        self.pad_id = self.chat.pad_id
        self.context_length = getattr(self.shared.model.config, "max_position_embeddings", None)
        self.precision = weights or inference_precision(precision, self.shared.model)
        self.vocab_size = self.shared.model.config.vocab_size  # the logits' width

    @property
    def model(self):
        """The Hugging Face model on `device` (fp32 on the CPU, else in `precision`). On a shared base it
        holds this engine's adapter only after `activate`."""
        return self.shared.model

    @property
    def lock(self):
        return self.shared.lock

    # ---------------------------------------------------------------------------------- public
    # Every call also takes the keyword options of `_request`: frequency_penalty, presence_penalty,
    # logit_bias, logprobs, response_format.
    def generate(
        self,
        conversations: list[list[Message]],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] | None = None,
        **options,
    ) -> list[Generation]:
        """Answer each conversation with the chat template; answers are stripped of surrounding whitespace."""
        prompts = [self._chat_ids(messages) for messages in conversations]
        return self._collect(
            self._request(prompts, max_new_tokens, temperature, top_p, seed, stop, strip=True, **options)
        )

    def complete(
        self,
        prompts: list[str],
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] | None = None,
        **options,
    ) -> list[Generation]:
        """Continue each raw text (no chat template); the continuation is returned as decoded."""
        ids = [self._text_ids(p) for p in prompts]
        return self._collect(
            self._request(ids, max_new_tokens, temperature, top_p, seed, stop, strip=False, **options)
        )

    def stream(
        self,
        conversation: list[Message] | str,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] | None = None,
        **options,
    ) -> Iterator[str | Generation]:
        """Text deltas as they are decoded, then one `Generation` (its text is the deltas joined).

        A `str` is raw text to continue; a message list is a chat. Bad input raises here, before the
        first delta. The iterator holds the model's lock from its first item until it is exhausted or closed.
        With `logprobs`, each delta is a `TextDelta` carrying the log-probs of the tokens since the last one.
        """
        chat = not isinstance(conversation, str)
        ids = self._chat_ids(conversation) if chat else self._text_ids(conversation)
        return self._stream(
            self._request([ids], max_new_tokens, temperature, top_p, seed, stop, strip=chat, **options)
        )

    def vocabulary(self, param: str = "response_format"):
        """llguidance's view of this engine's tokenizer (constrained.py), built on first use and shared per
        tokenizer. llguidance reads fast (Rust) tokenizers only: another one is a 400 naming `param`."""
        from tuneforge.inference import constrained

        try:
            return constrained.vocabulary(self.tokenizer, self.vocab_size, self.stop_ids)
        except (TypeError, ValueError, AttributeError) as error:
            raise InvalidOption(
                f"{param} needs the model's tokenizer in its fast form, and this one cannot be read that "
                f"way ({type(error).__name__}: {error})",
                param=param,
            ) from None

    # -------------------------------------------------------------------------------- internals
    def _chat_ids(self, messages: list[Message]) -> list[int]:
        if not messages:
            raise UsageError("a conversation needs at least one message")
        return self.tokenizer(self.chat.render_prompt(messages), add_special_tokens=False)["input_ids"]

    def _text_ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise UsageError("the prompt is empty", fix="Give the model some text to continue.")
        return ids

    def _request(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: list[str] | None,
        strip: bool,
        *,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
        logprobs: int | None = None,
        response_format: dict | None = None,
    ) -> _Request:
        """Checked options, each prompt's token budget and its text assembler.

        frequency_penalty, presence_penalty: OpenAI's, in [-2, 2], over the tokens each answer generated so far.
        logit_bias: token id -> bias in [-100, 100], added to the token's logit at every step.
        logprobs: None, or k in [0, 20]: each Generation gets its tokens' log-probs and the k most likely alternatives.
        response_format: OpenAI's {"type": "text" | "json_object" | "json_schema", ...}: JSON ones constrain decoding.
        Out-of-range options raise `InvalidOption` naming the request field.
        """
        if max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise UsageError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature} and {top_p}")
        if stop is not None and (isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop)):
            raise UsageError(f"stop must be a list of non-empty strings, got {stop!r}")
        budgets = [max_new_tokens] * len(prompts)
        if self.context_length and prompts:
            longest = max(map(len, prompts))
            if longest >= self.context_length:
                raise ContextTooLong(
                    f"the prompt has {longest} tokens; the model's context is {self.context_length}",
                    fix="Shorten the conversation or the prompt.",
                )
            budgets = [min(max_new_tokens, self.context_length - len(p)) for p in prompts]
        texts = [TextAssembler(self.tokenizer, stop, strip) for _ in prompts]
        for name, penalty in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
            if not -2 <= penalty <= 2:
                raise InvalidOption(f"{name} must be between -2 and 2, got {penalty}", param=name)
        bias = tuple(sorted((logit_bias or {}).items()))
        for token, value in bias:
            if not (isinstance(token, int) and 0 <= token < self.vocab_size):
                raise InvalidOption(
                    f"logit_bias: {token!r} is not a token id of this model (0 to {self.vocab_size - 1})",
                    param="logit_bias",
                )
            if not -100 <= value <= 100:
                raise InvalidOption(
                    f"logit_bias: the bias of token {token} must be between -100 and 100, got {value}",
                    param="logit_bias",
                )
        if logprobs is not None and not 0 <= logprobs <= 20:
            raise InvalidOption(f"logprobs must ask for 0 to 20 alternatives, got {logprobs}", param="logprobs")
        grammar = self.vocabulary().compile(response_format) if response_format is not None else None
        if logprobs is not None:
            self.vocabulary("logprobs")  # tokens' bytes come from it: fail here, before the first token
        sampling = Sampling(temperature, top_p, seed, frequency_penalty, presence_penalty, bias, logprobs)
        return _Request(
            prompts,
            budgets,
            sampling,
            texts,
            constraints=[grammar.constraint() for _ in prompts] if grammar else None,
            logprobs=[[] for _ in prompts] if logprobs is not None else None,
        )

    def _collect(self, request: _Request) -> list[Generation]:
        with self.lock:
            for _ in self._decode(request):
                pass
        return self._generations(request)

    def _stream(self, request: _Request) -> Iterator[str | Generation]:
        sent = 0  # log-probs already carried by a delta
        with self.lock:
            for _, delta in self._decode(request):
                if request.logprobs is not None:
                    logprobs = request.logprobs[0]
                    delta, sent = TextDelta(delta, logprobs[sent:]), len(logprobs)
                yield delta
        [generation] = self._generations(request)
        yield generation

    def _decode(self, request: _Request) -> Iterator[tuple[int, str]]:
        """(row, text delta) as tokens are decoded. The caller holds the lock."""
        if not request.prompts:
            return
        stepper = self.shared.stepper(self.adapter, self.precision)
        decoder = BatchDecoder(
            stepper,
            request.prompts,
            request.budgets,
            request.sampling,
            self.stop_ids,
            self.pad_id,
            constraints=request.constraints,
        )
        texts = request.texts
        for step in decoder:
            if request.logprobs is not None:
                for (row, token), (logprob, top) in zip(step, decoder.step_logprobs):
                    if token not in self.stop_ids:  # OpenAI lists the answer's tokens, not its end-of-turn
                        request.logprobs[row].append(self._token_logprob(token, logprob, top))
            for row, token in step:
                delta = texts[row].add(token)
                if texts[row].stopped:
                    decoder.stop(row)
                if delta:
                    yield row, delta
        for row, text in enumerate(texts):
            if delta := text.finish():
                yield row, delta

    def _generations(self, request: _Request) -> list[Generation]:
        return [
            Generation(
                text.released,
                len(ids),
                len(text.tokens),
                "stop" if text.stopped or (text.tokens and text.tokens[-1] in self.stop_ids) else "length",
                request.logprobs[row] if request.logprobs is not None else None,
            )
            for row, (ids, text) in enumerate(zip(request.prompts, request.texts))
        ]

    def _token_logprob(self, token: int, logprob: float, top: list[tuple[int, float]]) -> TokenLogprob:
        vocabulary = self.vocabulary()

        def entry(token: int, logprob: float, alternatives: list[TokenLogprob]) -> TokenLogprob:
            raw = vocabulary.token_bytes(token)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)
            return TokenLogprob(text, list(raw), logprob, alternatives)

        return entry(token, logprob, [entry(t, lp, []) for t, lp in top])


class EnginePool:
    """Engines for the server, by model name: one shared base model per base, adapters switched on it.

    The `capacity` most recently used models stay loaded (LoRA adapters, full fine-tuned models
    and base models all count); a base model's weights stay while any cached adapter uses them.
    Thread-safe: `get` may be called from any thread; generation on one base takes turns on its lock.
    """

    def __init__(
        self,
        capacity: int = 4,
        precision: str = "auto",
        resolve: Callable[[str], ModelSpec] = base_spec,
        device: str = "auto",
    ):
        """`resolve` turns a name into what to load: base models only by default; the server passes
        `runs.models.resolve_spec`, which knows runs, tuned models and checkpoints too. Every model
        loads on `device`, resolved here once."""
        if capacity < 1:
            raise UsageError(f"the engine pool needs room for at least one model, got capacity {capacity}")
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}'", fix=f"Use one of: {', '.join(PRECISIONS)}.")
        self.capacity, self.precision, self.resolve = capacity, precision, resolve
        self.device = resolve_device(device)
        self._dtype = DTYPES[device_precision(precision, self.device) or "fp32"]  # a shared base's weights
        self._engines: OrderedDict[tuple, Engine] = OrderedDict()  # least recently used first
        self._keys: dict[str, tuple] = {}  # every name asked for -> its model's key
        self._bases: weakref.WeakValueDictionary[str, SharedModel] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()  # guards the dictionaries (and loading), never held while generating

    def get(self, name: str) -> Engine:
        with self._lock:
            key = self._keys.get(name)
            if key is None or key not in self._engines:
                spec = self.resolve(name)
                key = (
                    ("adapter", str(spec.adapter))
                    if spec.adapter
                    else ("full", str(spec.weights))
                    if spec.weights
                    else ("base", spec.base_model)
                )
                self._keys[name] = key
                if key not in self._engines:
                    self._engines[key] = self._load(name, spec)
                    while len(self._engines) > self.capacity:
                        self._drop(next(iter(self._engines)))
            self._engines.move_to_end(key)
            return self._engines[key]

    def forget(self, name: str) -> None:
        """Drop a model (deleted, or replaced on disk); its next `get` loads it afresh."""
        with self._lock:
            key = self._keys.get(name)
            if key is not None:
                self._drop(key)

    def loaded(self) -> list[str]:
        """The cached models' names, least recently used first."""
        with self._lock:
            return [engine.spec.name for engine in self._engines.values()]

    def _drop(self, key: tuple) -> None:
        self._engines.pop(key, None)
        for name in [n for n, k in self._keys.items() if k == key]:
            del self._keys[name]

    def _load(self, name: str, spec: ModelSpec) -> Engine:
        from tuneforge.models.catalog import load_model

        if spec.weights is not None:
            return Engine(name, precision=self.precision, device=self.device, spec=spec)
        adapter = LoadedAdapter.load(spec.adapter) if spec.adapter else None
        if adapter is not None and not adapter.mergeable_in_place:
            # Its own merged copy: the shared base could not be restored after it.
            return Engine(name, precision=self.precision, device=self.device, spec=spec)
        shared = self._bases.get(spec.base_model)
        if shared is None:
            model = place(load_model(spec.base_model), self.device, self._dtype)
            shared = self._bases[spec.base_model] = SharedModel(model)
        return Engine(
            name,
            precision=self.precision,
            device=self.device,
            spec=spec,
            shared=shared,
            adapter=adapter,
            tokenizer=load_tokenizer_for(spec),
        )
