"""Silkie: align vision-language models with AI feedback (VLFeedback + DPO)."""

__version__ = "0.1.0"


def one_line(text: object) -> str:
    """Whitespace collapsed: every message that reaches a record or a log stays one line."""
    return " ".join(str(text).split())


def error_line(error: BaseException, limit: int = 300) -> str:
    """An exception as a record's one-line `error`: its class, then its message, cut at `limit`."""
    return f"{type(error).__name__}: {one_line(error)}"[:limit]


class InputError(ValueError):
    """Bad input a user can fix (a record, an image, a flag): reported as one line, never a traceback."""
