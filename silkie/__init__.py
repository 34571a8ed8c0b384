"""Silkie: align vision-language models with AI feedback (VLFeedback + DPO)."""

__version__ = "0.1.0"


class InputError(ValueError):
    """Bad input a user can fix (a record, an image, a flag): reported as one line, never a traceback."""
