"""Silkie: align vision-language models with AI feedback (VLFeedback + DPO)."""

__version__ = "0.1.0"


def one_line(text: object) -> str:
    """Whitespace collapsed: every message that reaches a record or a log stays one line."""
    return " ".join(str(text).split())


def error_line(error: BaseException, limit: int = 300) -> str:
    """An exception as a record's one-line `error`: its class, then its message, cut at `limit`."""
    return f"{type(error).__name__}: {one_line(error)}"[:limit]


def bound(name: str, default: int) -> int:
    """An input bound's value: the environment variable SILKIE_<name> when set (a positive whole number),
    else `default` (the module constant, read at call time so a test may patch it)."""
    import os

    text = os.environ.get(f"SILKIE_{name}")
    if text is None:
        return default
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise InputError(f"SILKIE_{name}={text!r}: expected a positive whole number")
    return value


class InputError(ValueError):
    """Bad input a user can fix (a record, an image, a flag): reported as one line, never a traceback."""


def quiet(verbose: bool = False) -> bool:
    """The console switch for the whole package: quiet (the default) or verbose (`verbose`, or the
    environment's SILKIE_VERBOSE=1). Returns whether verbose.

    Quiet: no deprecation warnings, library logs below errors only, no `datasets` progress bars, no
    per-model "Loading weights" bars (silkie.loader) and no raw Trainer metric dicts (silkie.train.recipe
    keeps its one line per logged step). The choice is kept in SILKIE_VERBOSE, which those modules and
    launched processes read. Imports nothing: a library already imported is set now, one imported later
    reads the environment variables set here (a user's own settings of them win).
    """
    import os
    import sys
    import warnings

    if verbose or os.environ.get("SILKIE_VERBOSE") == "1":
        os.environ["SILKIE_VERBOSE"] = "1"
        return True
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for variable, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DATASETS_VERBOSITY", "error"),
                            ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(variable, value)
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()  # this turns the Hub's bars off too: downloads keep theirs
        if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None:
            from huggingface_hub.utils import enable_progress_bars

            enable_progress_bars()
    if "datasets" in sys.modules:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    return False
