"""Mini benchmarks (silkie eval mini): held-out world items, answers through the pool backend
(adapter included), files in `silkie eval compare`'s layout, resumable runs."""

import json
from collections import Counter

import pytest

from silkie import InputError
from silkie.eval import ITEMS, SCORES, load, mme, mmhal
from silkie.eval import mini as mini_module
from silkie.eval.compare import compare, markdown
from silkie.eval.mini import (
    MINI_SEED,
    MMHAL_KINDS,
    PREDICTIONS,
    SUMMARY,
    mme_records,
    mmhal_item,
    mmhal_rating,
    mmhal_records,
    overlap,
    run_mini,
)
from silkie.world.tasks import YES_NO_SUBTASKS
from silkie.world.train_pool import HELD_OUT_SEED, TRAIN_SEED

QUIET = {"log": lambda *a: None}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both shipped models on the full default benchmarks (400 + 96 questions; ~9 s on 2 cores)."""
    root = tmp_path_factory.mktemp("mini")
    return {name: (root / name, run_mini(f"world:mini-{name}", root / name, **QUIET))
            for name in ("base", "describer")}


def test_items_are_held_out_balanced_and_paired():
    records, dropped = mme_records(400)
    assert len(records) == 400 and dropped > 0  # the small scene space does collide with training
    assert overlap(records) == 0
    pairs = [records[i:i + 2] for i in range(0, 400, 2)]
    assert all(a["id"].rsplit("-", 1)[0] == b["id"].rsplit("-", 1)[0] for a, b in pairs)
    assert all({a["meta"]["truth"], b["meta"]["truth"]} == {True, False} for a, b in pairs)
    assert Counter(a["meta"]["subtask"] for a, _ in pairs) == {s: 50 for s in YES_NO_SUBTASKS}
    assert all(r["id"].startswith(f"mini-{MINI_SEED}-") for r in records)
    small, _ = mme_records(40)  # a smaller n takes the first items of each subtask
    assert {r["id"] for r in small} <= {r["id"] for r in records}
    open_questions, _ = mmhal_records(96)
    assert Counter(r["meta"]["task"] for r in open_questions) == {k: 24 for k in MMHAL_KINDS}
    assert overlap(open_questions) == 0
    assert not {r["id"] for r in open_questions} & {r["id"] for r in records}
    assert MINI_SEED not in (TRAIN_SEED, HELD_OUT_SEED, 0)
    # the check is not vacuous: training items themselves all overlap
    from silkie.world.make import generate
    assert overlap([r for r, _ in generate(50, TRAIN_SEED)]) == 50
    with pytest.raises(InputError):
        run_mini("world:mini-base", "unused", seed=TRAIN_SEED, **QUIET)


def test_mmhal_rating_map():
    for h in range(1, 6):
        for f in range(1, 6):
            r = mmhal_rating(h, f)
            assert r in mmhal.SCALE
            assert (r >= mmhal.HALLUCINATION_BELOW) == (f >= 4 or (f == 3 and h == 1)), (h, f)
    assert mmhal_rating(5, 5) == 6 and mmhal_rating(5, 4) == 5 and mmhal_rating(1, 3) == 3
    assert mmhal_rating(1, 1) == 0


def test_judge_mapping_on_answers():
    records, _ = mmhal_records(8)
    for record in records:
        meta = record["meta"]
        scene_names = {f"{t['color']} {t['shape']}" for t in meta["scene"]["things"]}
        invented = next(f"{c} {s}" for c in ("purple", "green", "red", "blue", "yellow")
                        for s in ("circle", "square", "triangle") if f"{c} {s}" not in scene_names)
        right = mmhal_item(record, {"response": meta["answer"]})
        assert right["score"] >= 5 and not right["hallucination"], right
        wrong = mmhal_item(record, {"response": meta["answer"][:-1] + f" and a {invented} at the top."})
        assert wrong["score"] <= 2 and wrong["hallucination"], wrong
        assert mmhal_item(record, {"response": "Sorry, I can't help with that."})["score"] == 3


def test_files_in_compare_format(runs):
    for folder, summary in runs.values():
        for name, bench in (("mme", mme), ("mmhal", mmhal)):
            assert (folder / name / ITEMS).is_file() and (folder / name / PREDICTIONS).is_file()
            items = load(folder, name)
            assert json.loads((folder / name / SCORES).read_text()) == bench.score(items)
            assert len({it["id"] for it in items}) == len(items)
        mme_items = load(folder, "mme")
        assert len(mme_items) == 400
        assert set(Counter((it["subtask"], it["image"]) for it in mme_items).values()) == {2}
        scores = json.loads((folder / "mme" / SCORES).read_text())
        assert set(scores["subtasks"]) == set(YES_NO_SUBTASKS)
        assert scores["perception"] == pytest.approx(sum(s["score"] for s in scores["subtasks"].values()))
        hal = json.loads((folder / "mmhal" / SCORES).read_text())
        assert hal["n"] == 96 and set(hal["types"]) == set(MMHAL_KINDS) and hal["invalid"] == 0
        assert 0 <= hal["hallucination_rate"] <= 1
        written = json.loads((folder / SUMMARY).read_text())
        assert written == summary
        assert summary["overlap"] == summary["mme"]["overlap"] == summary["mmhal"]["overlap"] == 0
        assert summary["seed"] == MINI_SEED and summary["train_seed"] == TRAIN_SEED
        assert summary["generated"] == 496 and summary["generation"]["greedy"]


def test_describer_beats_base_and_compare_shows_it(runs, tmp_path):
    (base, b), (describer, d) = runs["base"], runs["describer"]
    assert d["mme"]["perception"] > b["mme"]["perception"] + 80  # 569 vs 399 when written
    comparison = compare(base, describer, out=tmp_path, resamples=500)
    perception = comparison["mme"]["metrics"]["perception"]
    assert perception["delta"] > 0 and perception["ci"][0] > 0
    assert comparison["mme"]["n"] == 400 and comparison["mmhal"]["n"] == 96
    table = markdown(comparison)
    assert "### mme" in table and "### mmhal" in table
    assert json.loads((tmp_path / "results.json").read_text())["mme"]["perception"] == d["mme"]["perception"]


def test_rerun_generates_nothing_and_loads_no_model(runs, monkeypatch):
    folder, _ = runs["base"]
    before = {p: p.read_bytes() for p in folder.rglob(PREDICTIONS)}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished folder must not load the model")
    monkeypatch.setattr(mini_module, "TransformersBackend", refuse)
    again = run_mini("world:mini-base", folder, **QUIET)
    assert again["generated"] == 0
    assert {p: p.read_bytes() for p in folder.rglob(PREDICTIONS)} == before
    assert again["mme"] == runs["base"][1]["mme"]
    with pytest.raises(InputError, match="another --out"):  # never mixes two models' answers
        run_mini("world:mini-describer", folder, **QUIET)


def test_adapter_reaches_the_backend_unmerged(runs, tmp_path, monkeypatch):
    """A LoRA adapter with B = 0 (peft's default init) changes nothing: same answers as the base."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForImageTextToText

    from silkie.chat import resolve

    base_path = resolve("world:mini-base")
    model = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")

    built = []
    real = mini_module.TransformersBackend

    def spy(*args, **kwargs):
        built.append(real(*args, **kwargs))
        return built[-1]
    monkeypatch.setattr(mini_module, "TransformersBackend", spy)
    summary = run_mini("world:mini-base", tmp_path / "run", adapter=str(tmp_path / "adapter"), n=40, n_mmhal=8,
                       **QUIET)
    assert summary["adapter"] == str(tmp_path / "adapter") and summary["generated"] == 48
    assert len(built) == 1 and isinstance(built[0].loaded.model, PeftModel)
    base_folder, _ = runs["base"]
    for name in ("mme", "mmhal"):
        base_answers = {it["id"]: it["response"] for it in load(base_folder, name)}
        for it in load(tmp_path / "run", name):
            assert it["response"] == base_answers[it["id"]], it["id"]
