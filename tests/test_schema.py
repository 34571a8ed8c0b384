"""The data contracts: record checks name what is wrong; both dataset configs round-trip through parquet."""

import io

import pytest
from datasets import Dataset, List, load_dataset
from datasets import Image as ImageFeature
from PIL import Image

from silkie.schema import (
    ASPECTS,
    FEATURES,
    SchemaError,
    assistant_turn,
    check_annotation,
    check_completion,
    check_instruction,
    completion_columns,
    rating_value,
    user_turn,
)


def png(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


def ratings(h="4", e="5", v="3"):
    return {aspect: {"Rating": r, "Rationale": f"because {r}"} for aspect, r in zip(ASPECTS, (h, e, v))}


INSTRUCTION = {"id": "mini-0-000001-0", "source": "mini", "prompt": "Describe the image.",
               "image": "images/ab12.png", "meta": {"task": "describe"}}
COMPLETION = {"id": "mini-0-000001-0", "model": "tiny-base", "response": "A red circle.",
              "generation": {"max_new_tokens": 32}, "error": None}
ANNOTATION = {"id": "mini-0-000001-0", "models": ["a", "b"], "annotations": [ratings(), ratings("N/A")],
              "judge": {"name": "scene", "prompt_version": "scene-v1", "order": [1, 0], "usage": {}},
              "error": None}


def test_valid_records_pass():
    assert check_instruction(dict(INSTRUCTION)) == INSTRUCTION
    assert check_completion(dict(COMPLETION)) == COMPLETION
    assert check_annotation(dict(ANNOTATION)) == ANNOTATION  # "N/A" is kept: ratings are data


@pytest.mark.parametrize("check, record, message", [
    (check_instruction, {k: v for k, v in INSTRUCTION.items() if k != "prompt"},
     "instruction 'mini-0-000001-0': missing required field 'prompt'"),
    (check_instruction, {**INSTRUCTION, "image": "/etc/passwd"}, "field 'image' must be a relative path"),
    (check_instruction, {**INSTRUCTION, "image": "images/../../x.png"}, "field 'image' must be a relative path"),
    (check_instruction, {**INSTRUCTION, "prompt": "  "}, "field 'prompt' must be a non-empty string"),
    (check_instruction, {**INSTRUCTION, "colour": "red"}, "unexpected field 'colour'"),
    (check_instruction, ["not", "a", "dict"], "must be a JSON object, got list"),
    (check_completion, {**COMPLETION, "response": ""}, "empty response without an error"),
    (check_completion, {**COMPLETION, "error": 3}, "field 'error' must be null or a string"),
    (check_annotation, {**ANNOTATION, "models": ["a"]}, "2 annotations for 1 models"),
    (check_annotation, {**ANNOTATION, "annotations": [ratings(), {"Helpfulness": {"Rating": "4", "Rationale": "ok"}}]},
     "missing aspect 'Ethical Considerations'"),
    (check_annotation, {**ANNOTATION, "annotations": [ratings(), ratings(h=4)]}, "Helpfulness Rating must be a string"),
    (check_annotation, {**ANNOTATION, "judge": {"name": "scene"}}, "judge.prompt_version"),
])
def test_bad_records_name_the_record_and_reason(check, record, message):
    with pytest.raises(SchemaError) as error:
        check(record)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_failed_completion_may_be_empty():
    assert check_completion({**COMPLETION, "response": "", "error": "CUDA out of memory"})


@pytest.mark.parametrize("text, value", [
    ("4", 4), (" 5 ", 5), ("1", 1), ("10", None), ("0", None), ("4/5", None), ("N/A", None), ("", None),
    (None, None), ("4.5", None)])
def test_rating_value_never_coerces(text, value):
    assert rating_value(text) == value


def default_rows():
    return [{
        "id": f"svit-conversation-{i}", "prompt": f"What is shown? {i}", "models": ["m1", "m2"],
        "completions": completion_columns([
            {"annotations": ratings(), "model": "m1", "response": "A cat."},
            {"annotations": ratings("2", "5", "1"), "model": "m2", "response": "A dog."}]),
        "image": {"bytes": png((i * 40, 0, 0)), "path": None}, "source": "svit",
    } for i in range(3)]


def pairs_rows():
    return [{
        "id": f"mini-{i}", "images": [{"bytes": png((0, i * 40, 0)), "path": None}],
        "prompt": user_turn("Is there a red circle in the image? Please answer yes or no."),
        "chosen": assistant_turn("Yes"), "rejected": assistant_turn("No"),
        "chosen_model": "a", "rejected_model": "b", "chosen_score": 5.0, "rejected_score": 1.6666666,
    } for i in range(3)]


@pytest.mark.parametrize("config, rows", [("default", default_rows()), ("pairs", pairs_rows())])
def test_configs_round_trip_through_parquet(tmp_path, config, rows):
    features = FEATURES[config]
    path = tmp_path / f"{config}.parquet"
    Dataset.from_list(rows, features=features).to_parquet(str(path))
    loaded = load_dataset("parquet", data_files=str(path), split="train", features=features)
    assert loaded.features == features
    again = load_dataset("parquet", data_files=str(path), split="train")  # features from parquet metadata
    assert again.features == features
    written = Dataset.from_list(rows, features=features)
    assert loaded.cast_column(*image_column(config)).to_list() == written.cast_column(*image_column(config)).to_list()
    row = loaded[0]
    if config == "default":  # the access path of the original training code
        assert row["completions"]["annotations"][1]["Visual Faithfulness"]["Rating"] == "1"
        assert row["completions"]["model"] == ["m1", "m2"]
        assert row["image"].size == (8, 6)
    else:
        assert row["prompt"][0]["content"][0] == {"type": "image", "text": None}
        assert row["chosen"][0]["content"][0]["text"] == "Yes"
        assert row["images"][0].size == (8, 6)


def image_column(config):
    """Compare images as stored bytes, not decoded objects."""
    raw = ImageFeature(decode=False)
    return ("image", raw) if config == "default" else ("images", List(raw))
