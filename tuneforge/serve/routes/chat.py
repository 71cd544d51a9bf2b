"""/v1/chat/completions and /v1/completions, plain or streamed (server-sent events).

Any base or tuned model: the engine pool loads a tuned model's adapter onto a shared base on first
use and keeps the most recent ones. Endpoints are plain `def`s, so generation runs in FastAPI's
thread pool and the server keeps answering other requests meanwhile. Every answer is stored under
its completion id, so feedback on it (POST /v1/tuneforge/feedback) can become training data.
"""

import codecs
import secrets
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tuneforge.data.examples import Message
from tuneforge.errors import TuneforgeError
from tuneforge.registry import access
from tuneforge.serve.deps import engines, project
from tuneforge.serve.model_access import model_not_found, servable_model
from tuneforge.serve.monitoring import record_request
from tuneforge.serve.protocol import (
    APIError,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceDelta,
    ChoiceLogprobs,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    ErrorResponse,
    Usage,
)

router = APIRouter(tags=["inference"], responses={"4XX": {"model": ErrorResponse}})
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
            raise APIError(
                400,
                f"content parts of type '{part.type}' are not supported: this server's models read text "
                "(parts of type 'text' with a string 'text')",
                param=f"{param}.{index}",
                code="unsupported_content",
            )
    return "".join(part.text for part in content)


def _messages(messages: list[ChatMessage]) -> list[Message]:
    return [
        Message("system" if m.role == "developer" else m.role, _text(m.content, f"messages.{i}.content"), name=m.name)
        for i, m in enumerate(messages)
    ]


def _sampling(body) -> dict:
    # OpenAI's temperature 0 means greedy; so does ours. top_p < 1 only matters when sampling.
    return {
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "stop": body.stop_list(),
        "frequency_penalty": body.frequency_penalty,
        "presence_penalty": body.presence_penalty,
        "logit_bias": body.logit_bias_ids(),
        "logprobs": body.logprob_alternatives(),
        "response_format": body.response_format,
    }


class _LegacyLogprobs:
    """/v1/completions' `logprobs` object; text_offset counts characters from the prompt's start, as
    OpenAI's does, and carries on from one streamed chunk to the next."""

    def __init__(self, prompt: str):
        self.offset, self.characters = len(prompt), codecs.getincrementaldecoder("utf-8")(errors="replace")

    def render(self, logprobs) -> CompletionLogprobs | None:
        if logprobs is None:
            return None
        offsets = []
        for token in logprobs:
            offsets.append(self.offset)
            self.offset += len(self.characters.decode(bytes(token.bytes)))  # a split character counts once complete
        # OpenAI lists the k most likely tokens and the chosen one: up to k + 1 entries.
        top = [{**{a.token: a.logprob for a in t.top_logprobs}, t.token: t.logprob} for t in logprobs]
        return CompletionLogprobs(
            tokens=[t.token for t in logprobs],
            token_logprobs=[t.logprob for t in logprobs],
            top_logprobs=top,
            text_offset=offsets,
        )


def _finish(
    request: Request,
    owner: str,
    name: str,
    completion_id: str,
    answer: str,
    prompt_tokens: int,
    completion_tokens: int,
    messages=None,
    prompt=None,
) -> Usage:
    access.record_completion(completion_id, owner, name, answer, messages=messages, prompt=prompt)
    counts = Usage.of(prompt_tokens, completion_tokens)
    request.state.model, request.state.usage = name, counts.model_dump()  # the request log's token counts
    return counts


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    description=(
        "With `stream: true`, server-sent events instead: one ChatCompletionChunk per `data:` line, then `data: "
        "[DONE]`."
    ),
)
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

        def chunk(choices: list[ChatCompletionChunkChoice], counts: Usage | None = None) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=completion_id, created=created, model=body.model, choices=choices, usage=counts
            )

        def choice(delta: ChoiceDelta, finish_reason=None, logprobs=None) -> list[ChatCompletionChunkChoice]:
            return [ChatCompletionChunkChoice(index=0, delta=delta, logprobs=logprobs, finish_reason=finish_reason)]

        pieces = engine.stream(messages, max_new_tokens=max_tokens, **_sampling(body))
        return _stream(
            request,
            owner,
            body,
            pieces,
            first=chunk(choice(ChoiceDelta(role="assistant", content=""))),
            delta=lambda text: chunk(
                choice(ChoiceDelta(content=text), logprobs=ChoiceLogprobs.of(getattr(text, "logprobs", None)))
            ),
            last=lambda g: chunk(choice(ChoiceDelta(), g.finish_reason)),
            on_done=lambda g: _finish(
                request,
                owner,
                body.model,
                completion_id,
                g.text,
                g.prompt_tokens,
                g.completion_tokens,
                messages=stored,
            ),
            usage_chunk=lambda counts: chunk([], counts),
        )
    generations = engine.generate([messages] * body.n, max_new_tokens=max_tokens, **_sampling(body))
    counts = _finish(
        request,
        owner,
        body.model,
        completion_id,
        generations[0].text,
        generations[0].prompt_tokens,
        sum(g.completion_tokens for g in generations),
        messages=stored,
    )
    return ChatCompletion(
        id=completion_id,
        created=created,
        model=body.model,
        usage=counts,
        choices=[
            ChatCompletionChoice(
                index=i,
                message=ChatCompletionMessage(content=g.text),
                logprobs=ChoiceLogprobs.of(g.logprobs),
                finish_reason=g.finish_reason,
            )
            for i, g in enumerate(generations)
        ],
    )


@router.post(
    "/completions",
    response_model=Completion,
    description="With `stream: true`, server-sent events instead: one Completion per `data:` line, then "
    "`data: [DONE]`.",
)
def completions(body: CompletionRequest, request: Request, owner: str = Depends(project)):
    request.state.input_param = "prompt"
    engine = _engine(request, owner, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt  # never empty: CompletionRequest
    completion_id, created = "cmpl-" + secrets.token_hex(12), int(time.time())

    def envelope(choices: list[CompletionChoice], counts: Usage | None = None) -> Completion:
        return Completion(id=completion_id, created=created, model=body.model, choices=choices, usage=counts)

    if body.stream:
        if body.n != 1 or len(prompts) != 1:
            raise APIError(400, "streaming supports one prompt and n=1 only", param="stream")
        pieces = engine.stream(prompts[0], max_new_tokens=body.max_tokens, **_sampling(body))
        legacy = _LegacyLogprobs(prompts[0])
        return _stream(
            request,
            owner,
            body,
            pieces,
            first=None,
            delta=lambda text: envelope(
                [CompletionChoice(text=text, index=0, logprobs=legacy.render(getattr(text, "logprobs", None)))]
            ),
            last=lambda g: envelope([CompletionChoice(text="", index=0, finish_reason=g.finish_reason)]),
            on_done=lambda g: _finish(
                request,
                owner,
                body.model,
                completion_id,
                g.text,
                g.prompt_tokens,
                g.completion_tokens,
                prompt=prompts[0],
            ),
            usage_chunk=lambda counts: envelope([], counts),
        )
    repeated = [p for p in prompts for _ in range(body.n)]
    generations = engine.complete(repeated, max_new_tokens=body.max_tokens, **_sampling(body))
    prompt_tokens = sum(g.prompt_tokens for g in generations[:: body.n])
    counts = _finish(
        request,
        owner,
        body.model,
        completion_id,
        generations[0].text,
        prompt_tokens,
        sum(g.completion_tokens for g in generations),
        prompt=prompts[0],
    )
    return envelope(
        [
            CompletionChoice(
                text=g.text,
                index=i,
                logprobs=_LegacyLogprobs(prompt).render(g.logprobs),
                finish_reason=g.finish_reason,
            )
            for i, (prompt, g) in enumerate(zip(repeated, generations))
        ],
        counts,
    )


def _stream(request: Request, owner: str, body, pieces, first, delta, last, on_done, usage_chunk) -> StreamingResponse:
    """Server-sent events: one `data:` line per chunk, `data: [DONE]` at the end. The request log
    entry is written here when the stream ends, with the real latency and token counts."""
    request.state.logged_by_stream = True
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    began = time.perf_counter()

    def event(data: BaseModel) -> str:
        return f"data: {data.model_dump_json()}\n\n"

    def events():
        status, error, counts = 200, None, None
        try:
            if first is not None:
                yield event(first)
            for piece in pieces:
                if isinstance(piece, str):
                    if piece:
                        yield event(delta(piece))
                else:
                    counts = on_done(piece)
                    yield event(last(piece))
            if include_usage:
                yield event(usage_chunk(counts))
        except Exception as failure:  # headers are gone: the error travels as an event, as OpenAI's does
            status, error = 500, f"{type(failure).__name__}: {failure}"
            yield event(APIError(500, error, type="server_error").response())
        yield "data: [DONE]\n\n"
        record_request(
            request, status, began, model=body.model, usage=counts.model_dump() if counts else None, error=error
        )

    return StreamingResponse(events(), media_type="text/event-stream")
