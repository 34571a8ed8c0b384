"""The VLFeedback builder: a run folder and a messy release sample both build into a folder that
`load_dataset` reads with the declared features, deterministically, with every flagged row reported."""

import io
import json
import warnings
import zipfile

import pytest
from datasets import load_dataset
from PIL import Image

from silkie.build import build
from silkie.schema import ASPECTS, FEATURES
from vlfeedback_dataset import main


def test_run_folder_builds_and_loads_with_declared_features(built_dataset):
    rows = load_dataset(str(built_dataset), split="train")
    assert rows.features == FEATURES["default"] and len(rows) == 40
    row = rows[0]
    assert row["completions"]["model"] == ["m-good", "m-yes", "m-wrong", "m-refuse"]
    assert row["completions"]["annotations"][0]["Helpfulness"]["Rating"] == "5"
    assert row["image"].size == (140, 140) and row["source"] == "mini"
    pairs = load_dataset(str(built_dataset), "pairs")
    assert set(pairs) == {"train", "test"} and pairs["train"].features == FEATURES["pairs"]
    assert len(pairs["test"]) >= 1
    assert not {r["id"] for r in pairs["train"]} & {r["id"] for r in pairs["test"]}, "a row in both splits"
    pair = pairs["train"][0]
    assert pair["chosen_score"] > pair["rejected_score"]
    assert pair["prompt"][0]["content"][0]["type"] == "image" and pair["images"][0].size == (140, 140)
    report = json.loads((built_dataset / "build_report.json").read_text())
    assert report["counts"] == {"rows": 40} and report["flagged"] == []


def test_build_is_deterministic(scene_run, built_dataset, tmp_path):
    again, _, _ = build(tmp_path / "again", run_dir=scene_run)
    for config in ("default", "pairs"):
        for shard in sorted((built_dataset / "data" / config).glob("*.parquet")):
            assert (again / "data" / config / shard.name).read_bytes() == shard.read_bytes(), shard.name
    assert (again / "README.md").read_text() == (built_dataset / "README.md").read_text()


def test_card_metadata_parses_without_warnings(built_dataset):
    from huggingface_hub import DatasetCard

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card = DatasetCard.load(built_dataset / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-nc-4.0" and data["pretty_name"] == "VLFeedback"
    assert [c["config_name"] for c in data["configs"]] == ["default", "pairs"]
    assert data["size_categories"] == ["n<1K"] or data["size_categories"] == "n<1K"
    body = card.text
    assert "mini (40)" in body and "m-good (40)" in body and "scene, prompt version scene-v1" in body
    assert "| m-good | 5.0 | 5.0 | 5.0 |" in body  # per-model means come from the data


def test_pairs_feed_dpo_trainer_without_conversion(built_dataset, tiny_model_paths, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import DPOConfig, DPOTrainer

    pairs = load_dataset(str(built_dataset), "pairs", split="train").select(range(4))
    path = tiny_model_paths["tiny-qwen2-vl"]
    model, processor = AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, max_length=None,
                     use_cpu=True, bf16=False, activation_checkpointing=False, report_to=[], save_strategy="no")
    lora = LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=processor, peft_config=lora)
    trainer.train()
    assert trainer.state.global_step == 1 and trainer.state.log_history[-1]["train_loss"] > 0


def jpeg(color, size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def completion(model, ratings, text="An answer."):
    return {"annotations": {a: {"Rating": r, "Rationale": "why"} for a, r in zip(ASPECTS, ratings)},
            "model": model, "response": text}


@pytest.fixture
def release(tmp_path):
    """A release-format sample with every kind of mess the real files have."""
    good = [completion("a", "555"), completion("b", "333"), completion("c", "111"), completion("d", "222")]
    lines = [
        {"id": "svit-conversation-1", "prompt": "What is shown?", "models": list("abcd"), "completions": good},
        {"id": "llava-2", "prompt": "Column-wise completions", "models": list("abcd"),  # the other layout
         "completions": {k: [c[k] for c in good] for k in ("annotations", "model", "response")}},
        {"id": "lrv-3", "prompt": "Non-numeric", "models": list("abcd"),
         "completions": [completion("a", ["N/A", "5", "5"]), *good[1:]]},
        {"id": "lrv-4", "prompt": "Out of range", "models": list("abcd"),
         "completions": [completion("a", ["10", "5", "5"]), *good[1:]]},
        {"id": "m3it-5", "prompt": "Three completions", "models": list("abc"), "completions": good[:3]},
        {"id": "svit-conversation-1", "prompt": "Duplicate id", "models": list("abcd"), "completions": good},
        {"id": "llava-6", "prompt": "No image", "models": list("abcd"), "completions": good},
        {"id": "llava-7", "prompt": "Corrupt image", "models": list("abcd"), "completions": good},
        {"id": "llava-8", "prompt": "Huge image", "models": list("abcd"), "completions": good},
    ]
    jsonl = tmp_path / "vlfeedback_80k.jsonl"
    text = "".join(json.dumps(line) + "\n" for line in lines[:3]) + "{not json\n" + \
        "".join(json.dumps(line) + "\n" for line in lines[3:])
    jsonl.write_text(text)
    archive = tmp_path / "merged_images.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for row_id in ("svit-conversation-1", "llava-2", "lrv-3", "lrv-4", "m3it-5"):
            z.writestr(f"merged_images/{row_id}.jpg", jpeg((200, 10, 10)))
        z.writestr("merged_images/llava-7.jpg", jpeg((0, 0, 0))[:200])
        z.writestr("merged_images/llava-8.jpg", jpeg((0, 0, 0), size=(4000, 3000)))
        z.writestr("../escape.jpg", jpeg((1, 2, 3)))
    return jsonl, archive


def test_release_sample_builds_and_reports_every_flag(release, tmp_path):
    jsonl, archive = release
    out, report, pairs = build(tmp_path / "out", release=jsonl, images=archive, max_pixels=10_000_000)
    counts = report.counts
    assert counts["rows"] == 8 and counts["duplicate_ids"] == 1 and counts["invalid_json_lines"] == 1
    assert counts["non_numeric_ratings"] == 1 and counts["out_of_range_ratings"] == 1
    assert counts["rows_with_other_than_4_completions"] == 1
    assert counts["missing_images"] == 1 and counts["bad_images"] == 2 and counts["refused_zip_entries"] == 1
    flagged = json.loads((out / "build_report.json").read_text())["flagged"]
    reasons = {(f["id"], f["reason"].split(":")[0]) for f in flagged}
    assert ("llava-6", "image missing") in reasons and ("llava-7", "image unusable") in reasons
    assert any("invalid JSON" in f["reason"] for f in flagged)
    rows = load_dataset(str(out), split="train")
    by_id = {r["id"]: r for r in rows}
    assert by_id["lrv-3"]["completions"]["annotations"][0]["Helpfulness"]["Rating"] == "N/A"  # kept as written
    assert by_id["llava-6"]["image"] is None and by_id["llava-7"]["image"] is None
    assert by_id["llava-2"]["completions"]["model"] == list("abcd")
    assert by_id["svit-conversation-1"]["prompt"] == "What is shown?"  # the first of the duplicates
    pair_rows = load_dataset(str(out), "pairs")
    paired_ids = {r["id"] for split in pair_rows.values() for r in split}
    assert not paired_ids & {"llava-6", "llava-7", "llava-8"}  # rows without a usable image pair nothing
    # silkie rule: lrv-3 pairs only the 3 responses with numeric ratings (3 pairs); the "10" still counts.
    assert sum(r["id"] == "lrv-3" for s in pair_rows.values() for r in s) == 3
    assert sum(r["id"] == "lrv-4" for s in pair_rows.values() for r in s) == 6
    assert sum(r["id"] == "m3it-5" for s in pair_rows.values() for r in s) == 3


def test_cli_reports_bad_usage(tmp_path, capsys):
    assert main(["build", "--from-release", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_the_real_chain_builds_collect_generate_annotate(tmp_path):
    """collect --source mini -> generate (the shipped pool) -> annotate --judge scene -> build."""
    from silkie.cli import main as silkie

    run = tmp_path / "run"
    assert silkie(["collect", "--source", "mini", "--n", "12", "--seed", "5",
                   "--out", str(run / "instructions.jsonl")]) == 0
    assert silkie(["generate", "--instructions", str(run / "instructions.jsonl"),
                   "--out", str(run / "completions.jsonl")]) == 0
    assert silkie(["annotate", "--judge", "scene", "--instructions", str(run / "instructions.jsonl"),
                   "--completions", str(run / "completions.jsonl"), "--out", str(run / "annotations.jsonl")]) == 0
    out, report, pairs = build(run / "vlfeedback", run_dir=run)
    rows = load_dataset(str(out), split="train")
    assert len(rows) == 12 and all(len(r["models"]) == 4 for r in rows)
    assert pairs["pairs"] > 0 and sum(1 for split in load_dataset(str(out), "pairs").values() for _ in split) == \
        pairs["pairs"]


def test_shards_split_by_size_and_load_as_one(scene_run, tmp_path):
    out, _, _ = build(tmp_path / "vlfeedback", run_dir=scene_run, max_shard_size="40KB", writer_batch_size=8)
    shards = sorted((out / "data" / "default").glob("train-*.parquet"))
    assert len(shards) > 1 and shards[-1].name.endswith(f"-of-{len(shards):05d}.parquet")
    assert len(load_dataset(str(out), split="train")) == 40


def test_the_source_is_read_once(release, tmp_path, monkeypatch):
    """One pass over the release: each image is read (and checked) once, for `default`, pairs and card alike."""
    import silkie.dataset

    jsonl, archive = release
    passes, reads, open_, rows = [], [], zipfile.ZipFile.open, silkie.dataset.release_rows
    monkeypatch.setattr(silkie.dataset, "release_rows", lambda *a, **k: passes.append(1) or rows(*a, **k))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k:
                        reads.append(getattr(info, "filename", info)) or open_(self, info, *a, **k))
    _, report, pairs = build(tmp_path / "out", release=jsonl, images=archive, max_pixels=10_000_000)
    assert len(passes) == 1 and pairs["pairs"] > 0
    assert sorted(reads) == sorted(set(reads)) and len(reads) == 7  # every row with an image in the zip


def test_the_datasets_builder_writes_what_build_writes(release, tmp_path):
    """`vlfeedback_dataset.VLFeedback`, the same rows behind `datasets`' builder interface, byte for byte."""
    from vlfeedback_dataset import VLFeedback

    jsonl, archive = release
    out, _, _ = build(tmp_path / "out", release=jsonl, images=archive, max_pixels=10_000_000)
    for config in ("default", "pairs"):
        builder = VLFeedback(config_name=config, cache_dir=str(tmp_path / "cache"), hash="test", release=str(jsonl),
                             images=str(archive), max_pixels=10_000_000)
        builder.download_and_prepare(output_dir=str(tmp_path / config), file_format="parquet")
        for split in builder.info.splits:
            [shard] = (tmp_path / config).glob(f"*-{split}.parquet")
            assert shard.read_bytes() == (out / "data" / config / f"{split}-00000-of-00001.parquet").read_bytes()
