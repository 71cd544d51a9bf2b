"""/v1/chat/completions and /v1/completions, plain or streamed (server-sent events).

Any base or tuned model: the engine pool loads a tuned model's adapter onto a shared base on first
use and keeps the most recent ones. Endpoints are plain `def`s, so generation runs in FastAPI's
thread pool and the server keeps answering other requests meanwhile. Every answer is stored under
its completion id, so feedback on it (POST /v1/tuneforge/feedback) can become training data.
"""

import json
import secrets
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from tuneforge.data.examples import Message
from tuneforge.errors import TuneforgeError
from tuneforge.registry import access
from tuneforge.serve.app import engines, project, route_template
from tuneforge.serve.protocol import APIError, ChatCompletionRequest, ChatMessage, CompletionRequest, usage
from tuneforge.serve.routes.models import check_access, model_not_found

router = APIRouter(tags=["inference"])
DEFAULT_MAX_TOKENS = 256


def _engine(request: Request, owner: str, name: str):
    check_access(owner, name)  # another project's model: 404 before anything loads
    try:
        return engines(request.app).get(name)
    except TuneforgeError:
        raise model_not_found(name) from None


def _text(content) -> str:
    """OpenAI content parts -> text (images and audio have no meaning to a text model)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.get("text", "") for part in content if part.get("type") in ("text", "input_text"))


def _messages(messages: list[ChatMessage]) -> list[Message]:
    return [Message("system" if m.role == "developer" else m.role, _text(m.content), name=m.name) for m in messages]


def _sampling(body) -> dict:
    # OpenAI's temperature 0 means greedy; so does ours. top_p < 1 only matters when sampling.
    return {"temperature": body.temperature, "top_p": body.top_p, "seed": body.seed, "stop": body.stop_list()}


def _finish(request: Request, owner: str, name: str, completion_id: str, answer: str, prompt_tokens: int,
            completion_tokens: int, messages=None, prompt=None) -> dict:
    access.record_completion(completion_id, owner, name, answer, messages=messages, prompt=prompt)
    request.state.model, request.state.usage = name, usage(prompt_tokens, completion_tokens)
    return request.state.usage


@router.post("/chat/completions")
def chat_completions(body: ChatCompletionRequest, request: Request, owner: str = Depends(project)):
    engine = _engine(request, owner, body.model)
    messages = _messages(body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
    completion_id, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
    stored = [m.model_dump(exclude_none=True) for m in body.messages]
    if body.stream:
        if body.n != 1:
            raise APIError(400, "streaming supports n=1 only", param="n")

        def chunk(delta: dict, finish_reason=None, **extra) -> dict:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "system_fingerprint": None, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                             "finish_reason": finish_reason}], **extra}

        return _stream(request, owner, body, engine.stream(messages, max_new_tokens=max_tokens, **_sampling(body)),
                       first=chunk({"role": "assistant", "content": ""}), delta=lambda text: chunk({"content": text}),
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
                         "logprobs": None, "finish_reason": g.finish_reason} for i, g in enumerate(generations)]}


@router.post("/completions")
def completions(body: CompletionRequest, request: Request, owner: str = Depends(project)):
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
        return _stream(request, owner, body, engine.stream(prompts[0], max_new_tokens=body.max_tokens, **_sampling(body)),
                       first=None, delta=lambda text: envelope([{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]),
                       last=lambda g: envelope([{"text": "", "index": 0, "logprobs": None, "finish_reason": g.finish_reason}]),
                       on_done=lambda g: _finish(request, owner, body.model, completion_id, g.text, g.prompt_tokens,
                                                 g.completion_tokens, prompt=prompts[0]),
                       usage_chunk=lambda counts: envelope([], usage=counts))
    repeated = [p for p in prompts for _ in range(body.n)]
    generations = engine.complete(repeated, max_new_tokens=body.max_tokens, **_sampling(body))
    prompt_tokens = sum(g.prompt_tokens for g in generations[::body.n])
    counts = _finish(request, owner, body.model, completion_id, generations[0].text, prompt_tokens,
                     sum(g.completion_tokens for g in generations), prompt=prompts[0])
    return envelope([{"text": g.text, "index": i, "logprobs": None, "finish_reason": g.finish_reason}
                     for i, g in enumerate(generations)], usage=counts)


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
        access.log_request(project=owner, method="POST", route=route_template(request), model=body.model, status_code=status,
                           latency_ms=(time.perf_counter() - began) * 1000, prompt_tokens=counts.get("prompt_tokens", 0),
                           completion_tokens=counts.get("completion_tokens", 0), error=error)

    return StreamingResponse(events(), media_type="text/event-stream")
