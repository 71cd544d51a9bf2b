"""/v1/chat/completions and /v1/completions, plain or streamed (server-sent events).

Any base or tuned model: the engine pool loads a tuned model's adapter onto a shared base on first
use and keeps the most recent ones. Endpoints are plain `def`s, so generation runs in FastAPI's
thread pool and the server keeps answering other requests meanwhile. Every answer is stored under
its completion id, so feedback on it (POST /v1/tuneforge/feedback) can become training data.
"""

import codecs
import json
import secrets
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tuneforge.data.examples import Message
from tuneforge.errors import TuneforgeError
from tuneforge.registry import access
from tuneforge.serve.deps import engines, project
from tuneforge.serve.monitoring import record_request
from tuneforge.serve.protocol import APIError, ChatCompletionRequest, ChatMessage, CompletionRequest, usage
from tuneforge.serve.model_access import model_not_found, servable_model

router = APIRouter(tags=["inference"])
DEFAULT_MAX_TOKENS = 256


def _engine(request: Request, owner: str, name: str):
    # Another project's model, or a name that is not a model callers may use: 404 before anything loads.
    load_name = servable_model(owner, name, request.app.state.allowed_model_dirs)
    try:
        return engines(request.app).get(load_name)
    except TuneforgeError:
        raise model_not_found(name) from None


TEXT_PARTS = ("text", "input_text")


def _text(content, param: str) -> str:
    """OpenAI content parts -> text. Images and audio mean nothing to a text model: refused, not dropped."""
    if content is None or isinstance(content, str):
        return content or ""
    for index, part in enumerate(content):
        if part.type not in TEXT_PARTS or part.text is None:
            raise APIError(400, f"content parts of type '{part.type}' are not supported: this server's models read text "
                                "(parts of type 'text' with a string 'text')", param=f"{param}.{index}", code="unsupported_content")
    return "".join(part.text for part in content)


def _messages(messages: list[ChatMessage]) -> list[Message]:
    return [Message("system" if m.role == "developer" else m.role, _text(m.content, f"messages.{i}.content"), name=m.name)
            for i, m in enumerate(messages)]


def _sampling(body) -> dict:
    # OpenAI's temperature 0 means greedy; so does ours. top_p < 1 only matters when sampling.
    return {"temperature": body.temperature, "top_p": body.top_p, "seed": body.seed, "stop": body.stop_list(),
            "frequency_penalty": body.frequency_penalty, "presence_penalty": body.presence_penalty,
            "logit_bias": body.logit_bias_ids(), "logprobs": body.logprob_alternatives(),
            "response_format": body.response_format}


def _chat_logprobs(logprobs) -> dict | None:
    """The engine's token log-probs -> OpenAI's chat `logprobs` object (None when not asked for)."""
    if logprobs is None:
        return None

    def entry(token) -> dict:
        return {"token": token.token, "logprob": token.logprob, "bytes": token.bytes}

    return {"content": [{**entry(t), "top_logprobs": [entry(a) for a in t.top_logprobs]} for t in logprobs],
            "refusal": None}


class _LegacyLogprobs:
    """/v1/completions' `logprobs` object; text_offset counts characters from the prompt's start, as
    OpenAI's does, and carries on from one streamed chunk to the next."""

    def __init__(self, prompt: str):
        self.offset, self.characters = len(prompt), codecs.getincrementaldecoder("utf-8")(errors="replace")

    def render(self, logprobs) -> dict | None:
        if logprobs is None:
            return None
        offsets = []
        for token in logprobs:
            offsets.append(self.offset)
            self.offset += len(self.characters.decode(bytes(token.bytes)))  # a split character counts once complete
        # OpenAI lists the k most likely tokens and the chosen one: up to k + 1 entries.
        top = [{**{a.token: a.logprob for a in t.top_logprobs}, t.token: t.logprob} for t in logprobs]
        return {"tokens": [t.token for t in logprobs], "token_logprobs": [t.logprob for t in logprobs],
                "top_logprobs": top, "text_offset": offsets}


def _finish(request: Request, owner: str, name: str, completion_id: str, answer: str, prompt_tokens: int,
            completion_tokens: int, messages=None, prompt=None) -> dict:
    access.record_completion(completion_id, owner, name, answer, messages=messages, prompt=prompt)
    request.state.model, request.state.usage = name, usage(prompt_tokens, completion_tokens)
    return request.state.usage


@router.post("/chat/completions")
def chat_completions(body: ChatCompletionRequest, request: Request, owner: str = Depends(project)):
    request.state.input_param = "messages"  # what the engine's refusals (too long for the context) point at
    engine = _engine(request, owner, body.model)
    messages = _messages(body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    completion_id, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    stored = [m.model_dump(exclude_none=True) for m in body.messages]
    if body.stream:
        if body.n != 1:
            raise APIError(400, "streaming supports n=1 only", param="n")

        def chunk(delta: dict, finish_reason=None, logprobs=None, **extra) -> dict:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "system_fingerprint": None, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                                             "finish_reason": finish_reason}], **extra}

        pieces = engine.stream(messages, max_new_tokens=max_tokens, **_sampling(body))
        return _stream(request, owner, body, pieces, first=chunk({"role": "assistant", "content": ""}),
                       delta=lambda text: chunk({"content": text}, logprobs=_chat_logprobs(getattr(text, "logprobs", None))),
                       last=lambda g: chunk({}, g.finish_reason),
                       on_done=lambda g: _finish(request, owner, body.model, completion_id, g.text, g.prompt_tokens,
                                                 g.completion_tokens, messages=stored),
                       usage_chunk=lambda counts: {**chunk({}), "choices": [], "usage": counts})
    generations = engine.generate([messages] * body.n, max_new_tokens=max_tokens, **_sampling(body))
    counts = _finish(request, owner, body.model, completion_id, generations[0].text, generations[0].prompt_tokens,
                     sum(g.completion_tokens for g in generations), messages=stored)
    return {"id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "system_fingerprint": None, "usage": counts,
            "choices": [{"index": i, "message": {"role": "assistant", "content": g.text, "refusal": None},
                         "logprobs": _chat_logprobs(g.logprobs), "finish_reason": g.finish_reason}
                        for i, g in enumerate(generations)]}


@router.post("/completions")
def completions(body: CompletionRequest, request: Request, owner: str = Depends(project)):
    request.state.input_param = "prompt"
    engine = _engine(request, owner, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts:
        raise APIError(400, "prompt must not be empty", param="prompt")
    completion_id, created = "cmpl-" + secrets.token_hex(12), int(time.time())

    def envelope(choices: list[dict], **extra) -> dict:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": body.model,
                "system_fingerprint": None, "choices": choices, **extra}

    if body.stream:
        if body.n != 1 or len(prompts) != 1:
            raise APIError(400, "streaming supports one prompt and n=1 only", param="stream")
        pieces = engine.stream(prompts[0], max_new_tokens=body.max_tokens, **_sampling(body))
        legacy = _LegacyLogprobs(prompts[0])
        return _stream(request, owner, body, pieces, first=None,
                       delta=lambda text: envelope([{"text": text, "index": 0, "finish_reason": None,
                                                     "logprobs": legacy.render(getattr(text, "logprobs", None))}]),
                       last=lambda g: envelope([{"text": "", "index": 0, "logprobs": None, "finish_reason": g.finish_reason}]),
                       on_done=lambda g: _finish(request, owner, body.model, completion_id, g.text, g.prompt_tokens,
                                                 g.completion_tokens, prompt=prompts[0]),
                       usage_chunk=lambda counts: envelope([], usage=counts))
    repeated = [p for p in prompts for _ in range(body.n)]
    generations = engine.complete(repeated, max_new_tokens=body.max_tokens, **_sampling(body))
    prompt_tokens = sum(g.prompt_tokens for g in generations[::body.n])
    counts = _finish(request, owner, body.model, completion_id, generations[0].text, prompt_tokens,
                     sum(g.completion_tokens for g in generations), prompt=prompts[0])
    return envelope([{"text": g.text, "index": i, "logprobs": _LegacyLogprobs(prompt).render(g.logprobs),
                      "finish_reason": g.finish_reason} for i, (prompt, g) in enumerate(zip(repeated, generations))],
                    usage=counts)


def _stream(request: Request, owner: str, body, pieces, first, delta, last, on_done, usage_chunk) -> StreamingResponse:
    """Server-sent events: one `data:` line per chunk, `data: [DONE]` at the end. The request log
    entry is written here when the stream ends, with the real latency and token counts."""
    request.state.logged_by_stream = True
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    began = time.perf_counter()

    def events():
        status, error, counts = 200, None, {}
        try:
            if first is not None:
                yield f"data: {json.dumps(first)}\n\n"
            for piece in pieces:
                if isinstance(piece, str):
                    if piece:
                        yield f"data: {json.dumps(delta(piece))}\n\n"
                else:
                    counts = on_done(piece)
                    yield f"data: {json.dumps(last(piece))}\n\n"
            if include_usage:
                yield f"data: {json.dumps(usage_chunk(counts))}\n\n"
        except Exception as failure:  # headers are gone: the error travels as an event, as OpenAI's does
            status, error = 500, f"{type(failure).__name__}: {failure}"
            yield f"data: {json.dumps(APIError(500, error, type='server_error').envelope())}\n\n"
        yield "data: [DONE]\n\n"
        record_request(request, status, began, model=body.model, usage=counts, error=error)

    return StreamingResponse(events(), media_type="text/event-stream")
