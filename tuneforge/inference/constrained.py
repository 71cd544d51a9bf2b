"""Structured output: `response_format` JSON (any object, or one matching a JSON schema) by masking the logits.

llguidance (the guidance project's grammar engine, also in vLLM and llama.cpp; 3 MB, no dependencies)
turns a JSON schema into a grammar over the tokenizer's vocabulary; per step, a row's matcher fills a
bitmask of the tokens that keep the output a valid prefix of the JSON, and the decode loop (decode.py)
sets the other logits to -inf. End-of-turn ids are allowed only once the JSON is complete, so a
constrained row always closes its JSON, unless it runs out of tokens first (finish_reason "length",
as OpenAI's). Special tokens (<|im_start|>, ...) are never allowed inside the JSON.

Per tokenizer, llguidance's view of the vocabulary (a token trie: ~0.5 s to build for a 49k
vocabulary) is built once and kept while the tokenizer lives; a schema compiles per request (1-3 ms
for a small nested schema, ~40 ms the first time a process meets some features) and each row gets a
copy of the compiled matcher. The mask runs on the CPU: on the bundled model's 49k vocabulary,
filling it took 0.01-0.05 ms per step and `Masks.apply` as a whole ~0.1 ms, against ~30 ms for the
step itself (2 CPU cores, fp32): JSON output decodes as fast as free text.

Run its tests: `.venv/bin/python -m pytest -q tests/test_sampling_options.py`
"""

import re
import threading
import weakref

import numpy
import torch

from tuneforge.errors import InvalidOption

# OpenAI's json_object mode: any JSON object. Compact whitespace (", " and ": ") is enforced: a weak
# model allowed "any whitespace" between tokens can pad newlines until it runs out of tokens.
ANY_OBJECT = {"type": "object"}
# llguidance's JSON options, given as overrides so a schema's own "x-guidance" key cannot loosen them.
# lenient: keywords llguidance does not implement (uniqueItems, not, unknown formats) are ignored, not
# refused, so a schema written for another engine still works; the output satisfies the rest of it.
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False, "lenient": True}
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's rule for json_schema.name


class Vocabulary:
    """llguidance's view of one tokenizer, with the model's vocabulary size and end-of-turn ids."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: frozenset[int]):
        import llguidance.hf

        # n_vocab: the model's logits can be wider than the tokenizer (padding ids, never allowed); llguidance
        # refuses a narrower one, so a model with fewer ids than its tokenizer gets masks cut to its width.
        # The end-of-turn ids are allowed exactly when the JSON is complete. Special tokens are masked
        # inside the JSON by llguidance itself: their text is not JSON's.
        self.tokenizer = llguidance.hf.from_tokenizer(
            tokenizer, n_vocab=max(vocab_size, len(tokenizer)), eos_token=sorted(stop_ids) or None
        )
        self.vocab_size = vocab_size
        self._known = len(tokenizer)  # ids past the tokenizer decode to b""

    def token_bytes(self, token: int) -> bytes:
        """A token's bytes (a special one as its text), for log-probs."""
        return self.tokenizer.decode_bytes([token]) if 0 <= token < min(self._known, self.vocab_size) else b""

    def compile(self, response_format: dict | None) -> "Grammar | None":
        """OpenAI's `response_format` -> a grammar (None for plain text); InvalidOption naming
        `response_format` if malformed."""
        import llguidance

        schema, strict = _schema_of(response_format)
        if schema is None:
            return None
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                _closed(schema) if strict else schema, overrides=JSON_OPTIONS
            )
        except (ValueError, TypeError) as error:
            raise _unusable(str(error)) from None
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)  # never raises: errors are a state
        if matcher.is_error():
            raise _unusable(matcher.get_error())
        return Grammar(matcher, self.tokenizer.vocab_size)


def _unusable(error: str) -> InvalidOption:
    # llguidance's message can span lines ("regex parse error:\n    (?=x)a\n    ^^^\nerror: look-around ...")
    # and end in a dump of the parser's state: one line, the dump cut.
    reason = " ".join(re.split(r"<state>|<grammar>", error)[0].split())[:300] or "unknown error"
    return InvalidOption(
        f"response_format: this JSON schema cannot be used for constrained decoding: {reason}",
        param="response_format",
        fix="Correct the schema, or leave out the JSON Schema features llguidance does not support.",
    )


class Grammar:
    """A compiled response format; `constraint()` gives each row its own matcher."""

    def __init__(self, matcher, mask_size: int):
        self.matcher = matcher  # never advanced: rows get copies
        self.mask_size = mask_size  # tokens in the matcher's masks

    def constraint(self) -> "RowConstraint":
        return RowConstraint(self.matcher.deep_copy(), self.mask_size)


class RowConstraint:
    """One row's position in the grammar: fills its row of the bitmask, follows the tokens chosen."""

    def __init__(self, matcher, mask_size: int):
        self.matcher = matcher
        self.mask_words = (mask_size + 31) // 32

    def fill(self, bitmask: numpy.ndarray, index: int) -> None:
        """Row `index` of the (rows, words) int32 bitmask <- the tokens allowed next."""
        import llguidance.numpy

        if bitmask.shape[1] == self.mask_words:
            llguidance.numpy.fill_next_token_bitmask(self.matcher, bitmask, index)
        else:  # the model has fewer ids than its tokenizer: the ids past its logits are cut off
            whole = llguidance.numpy.allocate_token_bitmask(1, self.mask_words * 32)
            llguidance.numpy.fill_next_token_bitmask(self.matcher, whole, 0)
            bitmask[index] = whole[0, : bitmask.shape[1]]

    def accept(self, token: int) -> None:
        if self.matcher.is_stopped() and not self.matcher.is_error():
            return  # the JSON is complete: the mask allowed only end-of-turn, after which the decoder drops the row
        if not self.matcher.consume_token(token):
            reason = (self.matcher.get_error().strip().splitlines() or [""])[0]
            raise RuntimeError(f"token {token} was chosen outside the response format's mask: {reason}")


class Masks:
    """The decode loop's bitmask for a batch: (rows, ceil(vocab / 32)) int32, one bit per token."""

    def __init__(self, rows: int, vocab_size: int):
        import llguidance.numpy

        self.vocab_size = vocab_size
        # numpy, not llguidance.torch: its helpers torch.compile a kernel on first use (seconds, and a C
        # compiler on the CPU); numpy.unpackbits in `apply` takes ~0.02 ms for a 49k vocabulary.
        self.bitmask = llguidance.numpy.allocate_token_bitmask(rows, vocab_size)

    def apply(self, logits: torch.Tensor, rows: list[tuple[int, "RowConstraint | None"]]) -> torch.Tensor:
        """(batch, vocab) logits -> a float32 copy with the tokens each constrained row may not take at -inf.

        `rows` pairs each batch index with its row's constraint (None: unconstrained).
        """
        logits = logits.float().clone()
        indices = [index for index, constraint in rows if constraint is not None]
        for index, constraint in rows:
            if constraint is not None:
                constraint.fill(self.bitmask, index)
        if indices:
            # Bit i of word w is token 32w + i: as little-endian bytes, each byte unpacked low bit first.
            words = self.bitmask[indices].astype("<i4", copy=False).view(numpy.uint8)  # (constrained rows, words * 4)
            allowed = numpy.unpackbits(words, axis=1, bitorder="little")[:, : logits.shape[-1]]
            blocked = torch.from_numpy(allowed).to(logits.device) == 0  # (constrained rows, vocab)
            for row, index in enumerate(indices):
                logits[index].masked_fill_(blocked[row], float("-inf"))
        return logits


_VOCABULARIES: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()
_VOCABULARIES_LOCK = threading.Lock()


def vocabulary(tokenizer, vocab_size: int, stop_ids: frozenset[int]) -> Vocabulary:
    """The tokenizer's `Vocabulary`, built on first use and kept as long as the tokenizer."""
    key = (vocab_size, frozenset(stop_ids))
    with _VOCABULARIES_LOCK:
        built = _VOCABULARIES.setdefault(tokenizer, {})
        if key not in built:
            built[key] = Vocabulary(tokenizer, vocab_size, frozenset(stop_ids))
        return built[key]


# Keywords whose value is a subschema, a list of them, or a name -> subschema map (JSON Schema 2020-12).
_SUBSCHEMA = (
    "additionalProperties",
    "unevaluatedProperties",
    "items",
    "additionalItems",
    "unevaluatedItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
)
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _closed(schema, merged: bool = False):
    """OpenAI's strict structured outputs: a copy of `schema` whose objects with `properties` allow no others,
    and whose tuples (`prefixItems`) no further items, unless the schema says otherwise.

    Every output still validates against the schema as given; this only stops the model from adding
    keys and items it was not asked for (what OpenAI's `strict` promises). An allOf member, or a schema
    with allOf or $ref beside its own keywords, is left open: llguidance intersects those, and a closed
    part would forbid the properties the other parts add.
    """
    if not isinstance(schema, dict):
        return schema
    closed = dict(schema)
    for key in _SUBSCHEMA:
        if isinstance(closed.get(key), dict):
            closed[key] = _closed(closed[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(closed.get(key), list):
            closed[key] = [_closed(part, merged=key == "allOf") for part in closed[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(closed.get(key), dict):
            closed[key] = {name: _closed(part) for name, part in closed[key].items()}
    if merged or "allOf" in closed or "$ref" in closed:
        return closed
    if "properties" in closed and "additionalProperties" not in closed and "unevaluatedProperties" not in closed:
        closed["additionalProperties"] = False
    if "prefixItems" in closed and "items" not in closed and "unevaluatedItems" not in closed:
        closed["items"] = False
    return closed


def _schema_of(response_format) -> tuple[dict | None, bool]:
    """OpenAI's `response_format` -> (JSON schema to constrain to or None, strict)."""
    if response_format is None:
        return None, False
    if not isinstance(response_format, dict):
        raise InvalidOption(
            'response_format must be an object such as {"type": "json_object"}', param="response_format"
        )
    kind = response_format.get("type")
    if kind == "text":
        return None, False
    if kind == "json_object":
        return ANY_OBJECT, False
    if kind != "json_schema":
        raise InvalidOption(
            f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
            param="response_format",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidOption(
            "response_format of type 'json_schema' needs a 'json_schema' object with 'name' and 'schema'",
            param="response_format",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME.match(name):
        raise InvalidOption(
            "response_format.json_schema.name must be 1 to 64 letters, digits, '_' or '-'", param="response_format"
        )
    schema = spec.get("schema", ANY_OBJECT)
    if not isinstance(schema, dict):
        raise InvalidOption("response_format.json_schema.schema must be a JSON Schema object", param="response_format")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "/".join(map(str, error.path)) or "the top level"
        raise InvalidOption(
            f"response_format.json_schema.schema is not a valid JSON Schema at {where}: {error.message}",
            param="response_format",
        ) from None
    return schema, True
