"""Errors users can act on: what was wrong, where, and how to fix it.

Every error a user can cause is a `TuneforgeError`; the CLI prints it without a traceback and
exits with its `exit_code` (2 for usage errors such as a missing file, 1 otherwise).
"""


class TuneforgeError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.fix = fix


class UsageError(TuneforgeError):
    """The command line itself is wrong: a missing file, a malformed option."""

    exit_code = 2


class ModelNotAvailable(TuneforgeError):
    """A model name resolves to nothing this machine can load."""

    exit_code = 2


class StorageUnavailable(TuneforgeError):
    """The object store (TUNEFORGE_STORAGE_URL) did not take or give bytes: down, unreachable, refusing."""


class ContextTooLong(UsageError):
    """A prompt longer than the model's context window."""


class InvalidOption(UsageError):
    """A generation option a model cannot honour as given; `param` is the request field the server names in its 400."""

    def __init__(self, message: str, *, param: str, fix: str | None = None):
        super().__init__(message, fix=fix)
        self.param = param


class InvalidRequest(UsageError):
    """A request a service refuses: `param` is the field at fault and `code` OpenAI's error code, which
    the server's 400 carries."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value", fix: str | None = None):
        super().__init__(message, fix=fix)
        self.param, self.code = param, code
