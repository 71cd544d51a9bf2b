"""The canonical example types every accepted format converts into, at the edge, in `formats.py`.

Nothing downstream of `formats.py` knows which file format an example came from:
- `Conversation`: chat messages, each assistant message with a loss weight (0 or 1);
- `Preference`: a prompt (messages), a chosen and a rejected continuation (assistant messages);
- `Text`: raw text for continued pre-training.

`to_openai_record` writes the canonical JSONL form (OpenAI chat, OpenAI DPO, or `{"text": ...}`).
Plain dataclasses with slots, not pydantic: millions of these are built while checking a large file.
"""

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass(slots=True)
class Message:
    role: str
    content: str | None
    weight: int = 1  # only assistant messages are trained on; 0 keeps the turn as context only
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


@dataclass(slots=True)
class Conversation:
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    kind = "conversation"

    def split_at_last_reply(self) -> tuple[list[Message], Message]:
        """(the messages before the last assistant reply, that reply): a prompt and its answer."""
        last = max(i for i, m in enumerate(self.messages) if m.role == "assistant")
        return self.messages[:last], self.messages[last]


@dataclass(slots=True)
class Preference:
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    tools: list[dict[str, Any]] | None = None
    kind = "preference"


@dataclass(slots=True)
class Text:
    text: str
    kind = "text"


Example = Conversation | Preference | Text


@dataclass(slots=True)
class TextField:
    """One piece of user-written text inside an example, with the field path it came from in the
    source file (`messages[2].content`, `completion`, ...), so findings point at the user's own data."""

    path: str
    text: str
    role: str = "text"  # the role it plays: system/user/assistant/tool, or text for raw text


@dataclass(slots=True)
class ParsedExample:
    example: Example
    fields: list[TextField] = field(default_factory=list)


def message_record(message: Message) -> dict[str, Any]:
    record: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        record["name"] = message.name
    if message.tool_calls is not None:
        record["tool_calls"] = message.tool_calls
    if message.tool_call_id is not None:
        record["tool_call_id"] = message.tool_call_id
    if message.role == "assistant" and message.weight != 1:
        record["weight"] = message.weight
    return record


def to_openai_record(example: Example) -> dict[str, Any]:
    """The canonical on-disk form: OpenAI chat for conversations, OpenAI DPO for preferences."""
    if isinstance(example, Conversation):
        record: dict[str, Any] = {"messages": [message_record(m) for m in example.messages]}
        if example.tools is not None:
            record["tools"] = example.tools
        return record
    if isinstance(example, Preference):
        prompt: dict[str, Any] = {"messages": [message_record(m) for m in example.prompt]}
        if example.tools is not None:
            prompt["tools"] = example.tools
        return {
            "input": prompt,
            "preferred_output": [message_record(m) for m in example.chosen],
            "non_preferred_output": [message_record(m) for m in example.rejected],
        }
    return {"text": example.text}


def map_texts(example: Example, transform) -> Example:
    """A copy of `example` with `transform(str) -> str` applied to every piece of free text."""

    def message(m: Message) -> Message:
        content = transform(m.content) if m.content is not None else None
        return Message(m.role, content, m.weight, m.name, m.tool_calls, m.tool_call_id)

    if isinstance(example, Conversation):
        return Conversation([message(m) for m in example.messages], example.tools)
    if isinstance(example, Preference):
        return Preference(
            [message(m) for m in example.prompt],
            [message(m) for m in example.chosen],
            [message(m) for m in example.rejected],
            example.tools,
        )
    return Text(transform(example.text))
