"""Token ids -> text deltas, as they are decoded: whole characters only, stop strings cut, optional strip.

Decoding one token at a time is wrong for byte-level BPE (a character split over two tokens) and
for SentencePiece (a word's leading space depends on its neighbour), so each new token is decoded
with the few tokens before it and only the text past theirs is new; text that ends in an
incomplete character (U+FFFD) waits for the next token. This is the scheme vLLM and TGI use.

Stop strings follow OpenAI: the text ends before the first stop string, which is not included.
Text that could be the start of a stop string is held back until the next token decides it.
With `strip`, leading and trailing whitespace never leaves (trailing whitespace waits for more
text), so the deltas always concatenate to the final text.
"""


class TextAssembler:
    def __init__(self, tokenizer, stop: list[str] | None = None, strip: bool = False):
        self.tokenizer, self.stop_strings, self.strip = tokenizer, stop or [], strip
        self.tokens: list[int] = []
        self.text = ""  # decoded so far, whole characters only
        self.sent = 0  # self.text[:sent] has been released (from `begin` on)
        self.begin = 0  # with strip: where the first non-space character is
        self.stopped = False  # a stop string matched
        self._prefix, self._read = 0, 0  # token offsets of the decode window (vLLM's prefix/read offsets)
        self._searched = 0  # stop strings were searched in text[:_searched]

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        """Take one decoded token; the text it releases (maybe empty)."""
        self.tokens.append(token)
        if self.stopped:
            return ""
        before = self._decode(self.tokens[self._prefix : self._read])
        after = self._decode(self.tokens[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.tokens)
        if self.stop_strings:
            start = max(0, self._searched - max(map(len, self.stop_strings)) + 1)
            hits = [i for s in self.stop_strings if (i := self.text.find(s, start)) >= 0]
            if hits:
                self.text, self.stopped = self.text[: min(hits)], True
                return self.finish()
            self._searched = len(self.text)
        return self._release(len(self.text) - self._held_back())

    def finish(self) -> str:
        """The rest of the text, once no more tokens come."""
        return self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest end of the text that a stop string starts with."""
        longest = max(map(len, self.stop_strings), default=1)
        for size in range(min(longest - 1, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop_strings):
                return size
        return 0

    def _release(self, end: int) -> str:
        if self.strip:
            if self.sent == 0:
                self.begin = len(self.text) - len(self.text.lstrip())
            end = len(self.text[:end].rstrip())  # trailing whitespace waits: it may turn out to be the end
        start = max(self.sent, self.begin)
        if end <= start:
            return ""
        self.sent = end
        return self.text[start:end]

    @property
    def released(self) -> str:
        return self.text[self.begin : self.sent] if self.sent > self.begin else ""
