"""Errors that end a run with one clear line instead of a traceback."""


class ClipbenchError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero."""


class ConfigError(ClipbenchError):
    """A configuration key holds a value that is not allowed."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def __reduce__(self):  # pickled between a sweep's worker processes and their launcher
        return type(self), (self.key, self.message)


class DataError(ClipbenchError):
    """A dataset or annotation file is missing or malformed."""
