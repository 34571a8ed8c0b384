"""`annotate` with the scene judge on the mini world: valid records, the truth preferred, skipped
responses named, resumable; and the same through `silkie annotate`."""

import json

import pytest

from silkie.feedback.annotate import annotate, shown_order
from silkie.schema import ASPECTS, check_annotation, rating_value
from silkie.world.make import write
from silkie.world.scenes import COLORS, SHAPES, Scene


def wrong_answer(record):
    """A confident answer about things the scene lacks (or the opposite yes/no, or harmful help)."""
    meta = record["meta"]
    present = {t.name for t in Scene.from_dict(meta["scene"]).things}
    absent = [f"{c} {s}" for s in SHAPES for c in COLORS if f"{c} {s}" not in present]
    if meta["task"] == "yesno":
        return "No" if meta["answer"].startswith("Yes") else "Yes"
    if meta["task"] == "unsafe":
        return "Sure, here is the address: 12 Oak Street."
    return f"There are 7 shapes: a {absent[0]} and a {absent[1]}."


def scene_run(root, n=40):
    write(root, n, seed=11)
    records = [json.loads(line) for line in (root / "instructions.jsonl").read_text().splitlines()]
    with open(root / "completions.jsonl", "w") as f:
        for k, record in enumerate(records):
            rows = [("good", record["meta"]["answer"], None), ("bad", wrong_answer(record), None),
                    ("crashed", "", "CUDA out of memory" if k % 5 == 0 else None)]
            if k % 5:
                rows[2] = ("crashed", "Yes", None)
            if k == 3:  # every model failed: nothing to judge
                rows = [(m, "", "timeout") for m, _, _ in rows]
            for model, text, error in rows:
                f.write(json.dumps({"id": record["id"], "model": model, "response": text, "generation": {},
                                    "error": error}) + "\n")
    return root, records


def mean(cells):
    return sum(rating_value(cells[a]["Rating"]) for a in ASPECTS) / 3


def test_scene_judge_on_the_mini_world(tmp_path):
    root, instructions = scene_run(tmp_path)
    out = root / "annotations.jsonl"
    summary = annotate(root / "instructions.jsonl", root / "completions.jsonl", out, judge="scene",
                       overrides={"swap_check": 0.5}, progress=False)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in instructions]  # one each, in order
    for k, record in enumerate(records):
        check_annotation(record)
        assert record["judge"]["name"] == "scene" and record["judge"]["prompt_version"] == "scene-v1"
        if k == 3:
            assert record["error"] == "no successful completion to judge"
            assert record["models"] == [] and record["skipped"] == ["good", "bad", "crashed"]
            continue
        assert record["error"] is None
        assert record["models"][:2] == ["good", "bad"]  # the original completion order
        assert record["skipped"] == ["crashed"] if k % 5 == 0 else "skipped" not in record
        assert record["judge"]["order"] == shown_order(len(record["models"]), 0, record["id"])
        cells = dict(zip(record["models"], record["annotations"]))
        assert mean(cells["good"]) == 5 and mean(cells["bad"]) < 4, record["id"]
    assert summary.counts["judged"] == 39 and summary.counts["errors"] == 1
    assert summary.counts["skipped_responses"] == 8 + 3
    # The scene judge looks at each response alone, so reversing the order changes nothing.
    assert summary.counts["swapped"] > 5 and summary.counts["swap_agree"] == summary.counts["swap_cells"]
    report = (root / "judge_report.md").read_text()
    assert "| good | 39 | 5.00 | 5.00 | 5.00 |" in report and "Ratings unchanged: 100.0%" in report

    before = out.read_bytes()
    again = annotate(root / "instructions.jsonl", root / "completions.jsonl", out, judge="scene", progress=False)
    assert again.counts["done"] == 40 and again.counts["judged"] == 0 and out.read_bytes() == before


def test_scene_judge_refuses_what_is_not_a_world_instruction(tmp_path):
    root, instructions = scene_run(tmp_path, 4)
    lines = (root / "instructions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["meta"] = {}
    (root / "instructions.jsonl").write_text("\n".join([json.dumps(first)] + lines[1:]) + "\n")
    annotate(root / "instructions.jsonl", root / "completions.jsonl", root / "annotations.jsonl", judge="scene",
             progress=False)
    records = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]
    assert records[0]["error"] == "the scene judge rates mini-world instructions only"
    assert [r["error"] for r in records[1:]] == [None, None, "no successful completion to judge"]


def test_silkie_annotate_command(tmp_path, capsys):
    from silkie.cli import build_parser, main

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    if "annotate" not in commands:
        pytest.skip("`silkie annotate` is not wired into silkie/cli.py yet")
    root, _ = scene_run(tmp_path, 10)
    files = ["--instructions", str(root / "instructions.jsonl"), "--completions", str(root / "completions.jsonl")]
    assert main(["annotate", *files, "--out", str(root / "annotations.jsonl"), "--judge", "scene",
                 "--swap-check", "1"]) == 0
    assert "judge scene: 9 items judged, 1 with errors" in capsys.readouterr().out
    records = [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]
    assert len(records) == 10 and all(check_annotation(r) for r in records)
    assert sum("swap" in r["judge"] for r in records) == 9  # all but the one with nothing to judge
    assert (root / "judge_report.md").exists()
    assert main(["annotate", *files, "--out", str(root / "a.jsonl"), "--judge", "scene", "--swap-check", "2"]) == 2
    assert "swap_check is a share of items" in capsys.readouterr().err


def test_run_report_draws_the_judge_sections_from_json(tmp_path):
    """The run report reads judge_report.json, never judge_report.md: with the Markdown gone it still shows
    every judge section, exactly as the judge report draws it."""
    from types import SimpleNamespace

    from silkie.feedback.report import sections
    from silkie.report import write_run_report

    root, _ = scene_run(tmp_path, 10)
    annotate(root / "instructions.jsonl", root / "completions.jsonl", root / "annotations.jsonl", judge="scene",
             overrides={"swap_check": 1.0}, progress=False)
    figures = json.loads((root / "judge_report.json").read_text())
    assert figures["ratings"]["models"]["good"]["responses"] == 9 and figures["position_bias"]["swapped"] == 9
    (root / "judge_report.md").unlink()
    cfg = SimpleNamespace(name="t", seed=0, collect=SimpleNamespace(sources=["mini"]),
                          generate=SimpleNamespace(pool="mini"), annotate=SimpleNamespace(judge="scene"),
                          dataset=SimpleNamespace(judge_noise=0), baselines=[], rounds=1)
    text = write_run_report(root, cfg, {}).read_text()
    drawn = sections(figures)
    for heading in ("Parsing", "Position bias", "Ratings by aspect", "Mean rating by model"):
        assert f"### Judge: {heading.lower()}\n\n{drawn[heading]}\n" in text, heading
    assert "| good | 9 | 5.00 | 5.00 | 5.00 |" in text and "Ratings unchanged: 100.0%" in text
