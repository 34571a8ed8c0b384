"""The data contracts: aspects, ratings, the record of each stage and the HF features of each
dataset config. Everything that reads or writes these shapes imports them from here.

Records travel between stages as plain dicts (one JSON object per line, DESIGN §4); the
`check_*` functions say exactly what is wrong with one, so a stage can record the reason and go on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from datasets import Features, Image, List, Sequence, Value

from silkie import InputError, bound

# Facts of the VLFeedback release: the three aspects, in the order the judge writes them.
ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
RATING_SCALE = range(1, 6)  # judges write 1..5; the rating is stored as the string they wrote


# The longest a text field may be, in characters: far above the real data (the VLFeedback
# release's longest prompts and responses are a few thousand characters), so one hostile record
# is refused with its reason instead of flowing on into every later stage. The environment
# variable SILKIE_MAX_TEXT_CHARS overrides it.
MAX_TEXT_CHARS = 1 << 20


class SchemaError(InputError):
    """A record that breaks its stage's contract; the message is one line naming the record."""


def text_limit() -> int:
    """MAX_TEXT_CHARS, or SILKIE_MAX_TEXT_CHARS when set (read at call time)."""
    return bound("MAX_TEXT_CHARS", MAX_TEXT_CHARS)


def check_text_size(value: Any, where: str, limit: int | None = None) -> None:
    """Refuse a string longer than the text limit; `where` names the record and field."""
    limit = limit or text_limit()
    if isinstance(value, str) and len(value) > limit:
        raise SchemaError(f"{where} is {len(value):,} characters, over the limit of {limit:,} "
                          "(SILKIE_MAX_TEXT_CHARS)")


def official_value(rating) -> float | None:
    """A rating as the authors' pairing code reads it (vlf-silkie/VLFeedback run_dpo.py): `float` of its
    text (the release stores ratings as strings), or None where that raises ValueError or the rating is
    missing. So "+4", "4.5", "10" and "nan" are numbers here, though not ratings on the 1-5 scale."""
    if rating is None:
        return None
    try:
        return float(rating if isinstance(rating, str) else str(rating))
    except ValueError:
        return None


def rating_value(rating: str | None) -> int | None:
    """The integer a rating string means, or None when it is not a whole number on the 1-5 scale.

    Never coerces: "4" -> 4, " 5 " -> 5, but "4/5", "10", "N/A" and "" -> None (the caller keeps
    the raw string and counts it as invalid).
    """
    if rating is None:
        return None
    text = str(rating).strip()
    if not text.isdigit():
        return None
    value = int(text)
    return value if value in RATING_SCALE else None


def raw_rating(completion: dict, aspect: str):
    """The rating a completion's annotation holds for an aspect, as written (None when absent)."""
    return ((completion.get("annotations") or {}).get(aspect) or {}).get("Rating")


# ---- records of each stage -------------------------------------------------------------------

def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _optional_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def _relative_path(value: Any) -> bool:
    if not _nonempty_str(value):
        return False
    path = PurePosixPath(value)
    return not path.is_absolute() and ".." not in path.parts and "\\" not in value


# field -> (predicate, what it must be, required)
_Fields = dict[str, tuple[Callable[[Any], bool], str, bool]]

INSTRUCTION_FIELDS: _Fields = {
    "id": (_nonempty_str, "a non-empty string", True),
    "source": (_nonempty_str, "a non-empty string", True),
    "prompt": (_nonempty_str, "a non-empty string", True),
    "image": (_relative_path, "a relative path inside the run folder", True),
    "meta": (_is_dict, "an object", False),
}
COMPLETION_FIELDS: _Fields = {
    "id": (_nonempty_str, "a non-empty string", True),
    "model": (_nonempty_str, "a non-empty string", True),
    "response": (_is_str, "a string", True),
    "generation": (_is_dict, "an object", False),
    "error": (_optional_str, "null or a string", False),
}
ANNOTATION_FIELDS: _Fields = {
    "id": (_nonempty_str, "a non-empty string", True),
    "models": (lambda v: isinstance(v, list) and all(_nonempty_str(m) for m in v),
               "a list of model names", True),
    "annotations": (lambda v: isinstance(v, list), "a list", True),
    "judge": (_is_dict, "an object", True),
    "error": (_optional_str, "null or a string", False),
    # Models whose completion failed, so the judge never saw them (present only when some did).
    "skipped": (lambda v: isinstance(v, list) and all(_nonempty_str(m) for m in v), "a list of model names", False),
}


def _check_fields(kind: str, record: Any, fields: _Fields) -> None:
    if not isinstance(record, dict):
        raise SchemaError(f"{kind} record must be a JSON object, got {type(record).__name__}")
    name = f"{kind} {record.get('id')!r:.80}" if _is_str(record.get("id")) else f"{kind} record"
    limit = text_limit()
    for field, (ok, must_be, required) in fields.items():
        if field not in record:
            if required:
                raise SchemaError(f"{name}: missing required field {field!r}")
            continue
        check_text_size(record[field], f"{name}: field {field!r}", limit)
        if not ok(record[field]):
            raise SchemaError(f"{name}: field {field!r} must be {must_be}, got {record[field]!r:.60}")
    extra = sorted(set(record) - set(fields))
    if extra:
        raise SchemaError(f"{name}: unexpected field {extra[0]!r}")


def check_instruction(record: Any) -> dict:
    _check_fields("instruction", record, INSTRUCTION_FIELDS)
    return record


def check_completion(record: Any) -> dict:
    _check_fields("completion", record, COMPLETION_FIELDS)
    if record.get("error") is None and not record["response"].strip():
        raise SchemaError(f"completion {record['id']!r} from {record['model']!r}: empty response "
                          "without an error")
    return record


def check_ratings(annotation: Any, where: str) -> None:
    """One response's ratings: every aspect present with a string Rating and Rationale."""
    if not isinstance(annotation, dict):
        raise SchemaError(f"{where} must be an object of aspects")
    limit = text_limit()
    for aspect in ASPECTS:
        entry = annotation.get(aspect)
        if not isinstance(entry, dict):
            raise SchemaError(f"{where}: missing aspect {aspect!r}")
        for key in ("Rating", "Rationale"):
            if not isinstance(entry.get(key), str):
                raise SchemaError(f"{where}: {aspect} {key} must be a string, got {entry.get(key)!r:.40}")
            check_text_size(entry[key], f"{where}: {aspect} {key}", limit)
    extra = sorted(set(annotation) - set(ASPECTS))
    if extra:
        raise SchemaError(f"{where}: unknown aspect {extra[0]!r}")


def check_annotation(record: Any) -> dict:
    _check_fields("annotation", record, ANNOTATION_FIELDS)
    name = f"annotation {record['id']!r}"
    for key in ("name", "prompt_version"):
        if not _nonempty_str(record["judge"].get(key)):
            raise SchemaError(f"{name}: judge.{key} must be a non-empty string")
    both = sorted(set(record["models"]) & set(record.get("skipped", [])))
    if both:
        raise SchemaError(f"{name}: model {both[0]!r} is both rated and skipped")
    if record.get("error") is not None:
        return record  # a failed judgement keeps whatever partial ratings it has
    if len(record["annotations"]) != len(record["models"]):
        raise SchemaError(f"{name}: {len(record['annotations'])} annotations for "
                          f"{len(record['models'])} models")
    for model, annotation in zip(record["models"], record["annotations"]):
        check_ratings(annotation, f"{name} response of {model!r}")
    return record


# ---- dataset configs (Hub layout, DESIGN §4) ---------------------------------------------------

RATING_FEATURE = {"Rating": Value("string"), "Rationale": Value("string")}

# `default`: field-compatible with MMInstruction/VLFeedback. `completions` is a list of structs, which
# `datasets` presents column-wise, so row["completions"]["annotations"][i][aspect]["Rating"] works
# as in the original training code.
DEFAULT_FEATURES = Features({
    "id": Value("string"),
    "prompt": Value("string"),
    "models": List(Value("string")),
    "completions": Sequence({
        "annotations": {aspect: RATING_FEATURE for aspect in ASPECTS},
        "model": Value("string"),
        "response": Value("string"),
    }),
    "image": Image(),
    "source": Value("string"),
})

# `pairs`: TRL's conversational vision-preference format, fed to DPOTrainer as it is.
MESSAGES_FEATURE = List({
    "role": Value("string"),
    "content": List({"type": Value("string"), "text": Value("string")}),
})
PAIRS_FEATURES = Features({
    "id": Value("string"),
    "images": List(Image()),
    "prompt": MESSAGES_FEATURE,
    "chosen": MESSAGES_FEATURE,
    "rejected": MESSAGES_FEATURE,
    "chosen_model": Value("string"),
    "rejected_model": Value("string"),
    "chosen_score": Value("float32"),
    "rejected_score": Value("float32"),
})

FEATURES = {"default": DEFAULT_FEATURES, "pairs": PAIRS_FEATURES}


def completion_columns(completions: list[dict]) -> dict[str, list]:
    """A row's completions, one dict per response, in the column-wise form `default` stores."""
    return {key: [c[key] for c in completions] for key in ("annotations", "model", "response")}


def user_turn(text: str) -> list[dict]:
    """The `prompt` of a pair: one user turn holding the image placeholder and the instruction."""
    return [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}]


def assistant_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]
