"""Detect each record's format and convert it into a canonical example (see `examples.py`).

Accepted formats, by the keys of a record:
  openai_chat             {"messages": [...], "tools"?}         roles system/user/assistant/tool
  prompt_completion       {"prompt", "completion"}              OpenAI's legacy format
  prompt_response         {"prompt", "response", "system"?}
  alpaca                  {"instruction", "input"?, "output", "system"?}
  openai_dpo              {"input": {"messages"}, "preferred_output", "non_preferred_output"}
                          (also "preferred_completion"/"non_preferred_completion")
  prompt_chosen_rejected  {"prompt"?, "chosen", "rejected"}     strings or message lists
  text                    {"text"}, and every block of a .txt file

`parse_record` never raises on bad data: everything wrong becomes a `Finding` with the record's
line and the field path, and the example is `None` when an error makes it unusable.
"""

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from tuneforge.data.examples import (
    Conversation,
    Message,
    ParsedExample,
    Preference,
    Text,
    TextField,
)
from tuneforge.data.findings import Finding
from tuneforge.data.reader import json_type

MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
ROLE_SUGGESTIONS = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "function": "tool",
}


@dataclass
class Problems:
    """Findings for one record; `has_errors` decides whether the example is usable."""

    line: int
    found: list[Finding] = field(default_factory=list)

    def add(self, code: str, message: str, field_path: str | None = None, **extra) -> None:
        self.found.append(Finding(code, message, line=self.line, field=field_path, **extra))

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.found)


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # conversation | preference | text
    required: tuple[tuple[str, ...], ...]  # each entry: one key, or alternative spellings of it
    optional: tuple[str, ...]
    parse: Callable[[dict, Problems], ParsedExample | None]

    def known_keys(self) -> set[str]:
        return {key for alternatives in self.required for key in alternatives} | set(self.optional)

    def missing(self, keys: set[str]) -> list[str]:
        return [alternatives[0] for alternatives in self.required if not keys.intersection(alternatives)]


# ---------------------------------------------------------------------------------------- messages
def _string(value: Any, path: str, problems: Problems, fields: list[TextField], role: str) -> str | None:
    if not isinstance(value, str):
        problems.add("wrong_type", f"expected a string, found {json_type(value)}", path)
        return None
    if not value.strip():
        problems.add("empty_content", "is empty", path)
    fields.append(TextField(path, value, role))
    return value


def _content(message: dict, path: str, role: str, problems: Problems, fields: list[TextField]) -> str | None:
    has_tool_calls = bool(message.get("tool_calls"))
    if "content" not in message:
        if not has_tool_calls:
            problems.add("missing_key", "message has no 'content'", path)
        return None
    content = message["content"]
    if content is None:
        if not has_tool_calls:
            problems.add(
                "wrong_type",
                "content is null; only an assistant message with tool_calls may omit it",
                f"{path}.content",
            )
        return None
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                problems.add("wrong_type", "only text content parts are supported", f"{path}.content[{j}]")
        content = "".join(texts)
    if not isinstance(content, str):
        problems.add("wrong_type", f"content must be a string, found {json_type(content)}", f"{path}.content")
        return None
    if not content.strip() and not has_tool_calls:
        severity = "warning" if role == "system" else None
        problems.add("empty_content", f"{role} message content is empty", f"{path}.content", severity=severity)
    fields.append(TextField(f"{path}.content", content, role))
    return content


def _tool_calls(value: Any, path: str, problems: Problems) -> list[dict] | None:
    if not isinstance(value, list) or not value:
        problems.add("invalid_tool_call", "tool_calls must be a non-empty list", path)
        return None
    for j, call in enumerate(value):
        where = f"{path}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            problems.add("invalid_tool_call", "needs a 'function' object with a 'name'", where)
            continue
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            problems.add(
                "invalid_tool_call", "function.arguments must be a JSON-encoded string", f"{where}.function.arguments"
            )
            continue
        try:
            json.loads(arguments)
        except json.JSONDecodeError as error:
            problems.add(
                "invalid_tool_call",
                f"function.arguments is not valid JSON ({error.msg})",
                f"{where}.function.arguments",
            )
    return value


def _role(message: dict, path: str, problems: Problems) -> str | None:
    if "role" not in message:
        if "from" in message and "value" in message:
            problems.add(
                "missing_key",
                "message has no 'role'",
                f"{path}.role",
                fix="This looks like ShareGPT: rename from->role, value->content, human->user, gpt->assistant.",
            )
        else:
            problems.add("missing_key", "message has no 'role'", f"{path}.role")
        return None
    role = message["role"]
    if not isinstance(role, str):
        problems.add("wrong_type", f"role must be a string, found {json_type(role)}", f"{path}.role")
        return None
    role = ROLE_ALIASES.get(role, role)
    if role not in ("system", "user", "assistant", "tool"):
        hint = ROLE_SUGGESTIONS.get(role.lower())
        fix = f"Use '{hint}' instead of '{role}'." if hint else None
        problems.add("unknown_role", f"unknown role '{role}'", f"{path}.role", fix=fix)
        return None
    return role


def _message(message: Any, path: str, problems: Problems, fields: list[TextField]) -> Message | None:
    if not isinstance(message, dict):
        problems.add("wrong_type", f"a message must be an object, found {json_type(message)}", path)
        return None
    for key in message.keys() - MESSAGE_KEYS - {"from", "value"}:
        _unknown_key(key, MESSAGE_KEYS, f"{path}.{key}", problems)
    role = _role(message, path, problems)
    if role is None:
        return None
    weight = 1
    if "weight" in message:
        raw = message["weight"]
        if role != "assistant":
            problems.add("weight_not_on_assistant", f"weight on a {role} message is ignored", f"{path}.weight")
        elif isinstance(raw, bool) or raw not in (0, 1):
            problems.add("invalid_weight", f"weight is {json.dumps(raw)}", f"{path}.weight")
        else:
            weight = int(raw)
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        problems.add("wrong_type", f"name must be a string, found {json_type(name)}", f"{path}.name")
        name = None
    tool_calls = None
    if message.get("tool_calls") is not None:
        if role != "assistant":
            problems.add("invalid_tool_call", f"tool_calls on a {role} message", f"{path}.tool_calls")
        else:
            tool_calls = _tool_calls(message["tool_calls"], f"{path}.tool_calls", problems)
    tool_call_id = message.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        problems.add(
            "missing_key",
            "a tool message needs the 'tool_call_id' it answers",
            f"{path}.tool_call_id",
            severity="warning",
        )
    content = _content(message, path, role, problems, fields)
    return Message(role, content, weight, name, tool_calls, tool_call_id if isinstance(tool_call_id, str) else None)


def _messages(value: Any, path: str, problems: Problems, fields: list[TextField]) -> list[Message] | None:
    if not isinstance(value, list):
        problems.add("wrong_type", f"expected a list of messages, found {json_type(value)}", path)
        return None
    if not value:
        problems.add("empty_content", "the message list is empty", path)
        return None
    parsed = [_message(m, f"{path}[{i}]", problems, fields) for i, m in enumerate(value)]
    return None if any(m is None for m in parsed) else parsed


def check_turns(messages: list[Message], path: str, problems: Problems) -> None:
    """Conversation-level rules: something to learn, and a sensible order of turns."""
    assistants = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not assistants:
        problems.add("no_assistant_turn", "no assistant message", path)
        return
    if all(messages[i].weight == 0 for i in assistants):
        problems.add("nothing_to_train", "every assistant message has weight 0", path)
    previous: Message | None = None
    for i, message in enumerate(messages):
        where = f"{path}[{i}]"
        if message.role == "system" and previous is not None and previous.role != "system":
            problems.add("bad_turn_order", "system message after the conversation started", where)
        elif message.role == "tool":
            if (
                previous is None
                or previous.role not in ("assistant", "tool")
                or (previous.role == "assistant" and not previous.tool_calls)
            ):
                problems.add("orphan_tool_message", "tool message without a preceding assistant tool call", where)
        elif previous is not None and message.role == previous.role and message.role in ("user", "assistant"):
            problems.add("bad_turn_order", f"two {message.role} messages in a row", where)
        elif message.role == "assistant" and (previous is None or previous.role == "system"):
            problems.add("bad_turn_order", "the assistant speaks before the user", where)
        previous = message
    if assistants[-1] != len(messages) - 1:
        problems.add(
            "trailing_messages",
            f"{len(messages) - 1 - assistants[-1]} message(s) after the last assistant reply",
            f"{path}[{assistants[-1] + 1}]",
        )


def _unknown_key(key: str, known: set[str], path: str, problems: Problems) -> None:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    fix = f"Did you mean '{close[0]}'?" if close else None
    problems.add("unknown_key", f"unknown key '{key}' is ignored", path, fix=fix)


# ----------------------------------------------------------------------------------------- formats
def _parse_openai_chat(record: dict, problems: Problems) -> ParsedExample | None:
    fields: list[TextField] = []
    messages = _messages(record["messages"], "messages", problems, fields)
    tools = record.get("tools")
    if tools is not None and not isinstance(tools, list):
        problems.add("wrong_type", f"tools must be a list, found {json_type(tools)}", "tools")
        tools = None
    if messages is None:
        return None
    check_turns(messages, "messages", problems)
    return ParsedExample(Conversation(messages, tools), fields)


def _single_turn(
    system: Any, prompt: Any, answer: Any, paths: tuple[str, str, str], problems: Problems
) -> ParsedExample | None:
    fields: list[TextField] = []
    messages = []
    if system is not None:
        text = _string(system, paths[0], problems, fields, "system")
        if text is not None:
            messages.append(Message("system", text))
    user = _string(prompt, paths[1], problems, fields, "user")
    assistant = _string(answer, paths[2], problems, fields, "assistant")
    if user is None or assistant is None:
        return None
    return ParsedExample(Conversation([*messages, Message("user", user), Message("assistant", assistant)]), fields)


def _parse_prompt_completion(record: dict, problems: Problems) -> ParsedExample | None:
    return _single_turn(None, record["prompt"], record["completion"], ("", "prompt", "completion"), problems)


def _parse_prompt_response(record: dict, problems: Problems) -> ParsedExample | None:
    return _single_turn(
        record.get("system"), record["prompt"], record["response"], ("system", "prompt", "response"), problems
    )


def _parse_alpaca(record: dict, problems: Problems) -> ParsedExample | None:
    instruction, extra = record["instruction"], record.get("input", "")
    if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
        # Instruction and input become one user turn, the way Alpaca's own prompt joins them.
        parsed = _single_turn(
            record.get("system"), instruction, record["output"], ("system", "instruction", "output"), problems
        )
        if parsed is not None:
            user = next(m for m in parsed.example.messages if m.role == "user")
            user.content = f"{instruction}\n\n{extra}"
            parsed.fields.append(TextField("input", extra, "user"))
        return parsed
    if extra is not None and not isinstance(extra, str):
        problems.add("wrong_type", f"expected a string, found {json_type(extra)}", "input")
    return _single_turn(
        record.get("system"), instruction, record["output"], ("system", "instruction", "output"), problems
    )


def _side(value: Any, path: str, problems: Problems, fields: list[TextField]) -> list[Message] | None:
    """One side of a preference pair: a string, or a list of assistant messages."""
    if isinstance(value, str):
        text = _string(value, path, problems, fields, "assistant")
        return [Message("assistant", text)] if text is not None else None
    messages = _messages(value, path, problems, fields)
    if messages is not None and not any(m.role == "assistant" for m in messages):
        problems.add("no_assistant_turn", "no assistant message", path)
        return None
    return messages


def _preference(prompt: list[Message], chosen, rejected, tools, paths, problems, fields) -> ParsedExample | None:
    if chosen is None or rejected is None:
        return None
    if [m.content for m in chosen] == [m.content for m in rejected]:
        problems.add("identical_preference", "preferred and non-preferred outputs are identical", paths[1])
    if not any(m.role == "user" for m in prompt):
        problems.add("bad_turn_order", "the prompt has no user message", paths[0])
    return ParsedExample(Preference(prompt, chosen, rejected, tools), fields)


def _parse_openai_dpo(record: dict, problems: Problems) -> ParsedExample | None:
    fields: list[TextField] = []
    chosen_key = "preferred_output" if "preferred_output" in record else "preferred_completion"
    rejected_key = "non_preferred_output" if "non_preferred_output" in record else "non_preferred_completion"
    source = record["input"]
    if not isinstance(source, dict):
        problems.add("wrong_type", f"input must be an object with 'messages', found {json_type(source)}", "input")
        return None
    if "messages" not in source:
        problems.add("missing_key", "input has no 'messages'", "input.messages")
        return None
    prompt = _messages(source["messages"], "input.messages", problems, fields)
    chosen = _side(record[chosen_key], chosen_key, problems, fields)
    rejected = _side(record[rejected_key], rejected_key, problems, fields)
    if prompt is None:
        return None
    return _preference(
        prompt, chosen, rejected, source.get("tools"), ("input.messages", rejected_key), problems, fields
    )


def _parse_prompt_chosen_rejected(record: dict, problems: Problems) -> ParsedExample | None:
    fields: list[TextField] = []
    chosen = _side(record["chosen"], "chosen", problems, fields)
    rejected = _side(record["rejected"], "rejected", problems, fields)
    if "prompt" in record:
        raw = record["prompt"]
        if isinstance(raw, str):
            text = _string(raw, "prompt", problems, fields, "user")
            prompt = [Message("user", text)] if text is not None else None
        else:
            prompt = _messages(raw, "prompt", problems, fields)
    elif chosen is not None and rejected is not None:
        # TRL's "implicit prompt" form: both sides are whole conversations sharing the prompt.
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            problems.add("missing_key", "no 'prompt', and chosen/rejected share no prompt messages", "prompt")
            return None
    else:
        return None
    if prompt is None:
        return None
    return _preference(prompt, chosen, rejected, None, ("prompt", "rejected"), problems, fields)


def _parse_text(record: dict, problems: Problems) -> ParsedExample | None:
    fields: list[TextField] = []
    text = _string(record["text"], "text", problems, fields, "text")
    return ParsedExample(Text(text), fields) if text is not None else None


FORMATS = [  # most specific first: detection takes the first whose required keys are all present
    Format(
        "openai_dpo",
        "preference",
        (
            ("input",),
            ("preferred_output", "preferred_completion"),
            ("non_preferred_output", "non_preferred_completion"),
        ),
        (),
        _parse_openai_dpo,
    ),
    Format(
        "prompt_chosen_rejected",
        "preference",
        (("chosen",), ("rejected",)),
        ("prompt",),
        _parse_prompt_chosen_rejected,
    ),
    Format(
        "openai_chat",
        "conversation",
        (("messages",),),
        ("tools", "parallel_tool_calls", "functions"),
        _parse_openai_chat,
    ),
    Format("alpaca", "conversation", (("instruction",), ("output",)), ("input", "system"), _parse_alpaca),
    Format("prompt_completion", "conversation", (("prompt",), ("completion",)), (), _parse_prompt_completion),
    Format("prompt_response", "conversation", (("prompt",), ("response",)), ("system",), _parse_prompt_response),
    Format("text", "text", (("text",),), (), _parse_text),
]
FORMATS_BY_NAME = {f.name: f for f in FORMATS}
ALL_KEYS = set().union(*(f.known_keys() for f in FORMATS))


def detect_format(keys: set[str]) -> Format | None:
    """The first format whose required keys are all present, else the closest partial match."""
    for candidate in FORMATS:
        if not candidate.missing(keys):
            return candidate

    def closeness(i_format):
        i, candidate = i_format
        required = sum(bool(keys.intersection(alternatives)) for alternatives in candidate.required)
        return required, len(keys & candidate.known_keys()), -i

    i, candidate = max(enumerate(FORMATS), key=closeness)
    return candidate if closeness((i, candidate))[1] else None


def parse_record(value: Any, line: int) -> tuple[Format | None, ParsedExample | None, list[Finding]]:
    problems = Problems(line)
    if isinstance(value, str):  # a block of a .txt file
        fields = [TextField("text", value, "text")]
        return FORMATS_BY_NAME["text"], ParsedExample(Text(value), fields), problems.found
    keys = set(value)
    found = detect_format(keys)
    if found is None:
        near = sorted({m for k in keys for m in difflib.get_close_matches(k, sorted(ALL_KEYS), n=1, cutoff=0.7)})
        hint = f" Did you mean {', '.join(repr(k) for k in near)}?" if near else ""
        problems.add("unknown_format", f"keys {sorted(keys)} match no supported format.{hint}")
        return None, None, problems.found
    missing = found.missing(keys)
    for key in missing:
        problems.add("missing_key", f"'{key}' is required for the {found.name} format", key)
    for key in sorted(keys - found.known_keys()):
        _unknown_key(key, found.known_keys(), key, problems)
    if missing:
        return found, None, problems.found
    parsed = found.parse(value, problems)
    return found, (None if problems.has_errors else parsed), problems.found
