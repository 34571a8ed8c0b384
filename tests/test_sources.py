"""Instruction sources and the collect sampler, on small files in each release's own format."""

import base64
import json
import shutil
from pathlib import Path

import pytest

from silkie import InputError
from silkie.cli import main
from silkie.io import read_checked
from silkie.sources import PAPER_QUOTAS, collect, parse_quota, plan_quotas

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
COCO = FIXTURES / "coco" / "train2017"


def run(folder, *sources, n=100_000, **options):
    """Collect into folder/instructions.jsonl; the records, each checked and its image decoded."""
    path = Path(folder) / "instructions.jsonl"
    summary = collect(list(sources), path, n=n, **options)
    records = [record for _, record in read_checked(path)]
    assert all(isinstance(r, dict) for r in records), [r for r in records if not isinstance(r, dict)]
    return summary, records


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def skipped(folder):
    lines = (Path(folder) / "collect_skipped.jsonl").read_text().splitlines()
    return {r["id"]: r["reason"] for r in map(json.loads, lines)}


# source -> (spec, {id: prompt}, {id: part of its meta})
CASES = {
    "llava": (f"llava[images={COCO}]={FIXTURES / 'llava_instruct_150k.json'}", {
        "llava-000000000009": "What is the round red thing in the picture?",
        "llava-000000000009-1": "Describe the following image in detail.",  # one image, two samples
        "llava-000000000025": "What colour is the square?",
    }, {"llava-000000000009": {"human_turns": 2, "image_file": "000000000009.jpg"}}),
    "svit": (f"svit={FIXTURES / 'svit_complex_reasoning.json'}", {
        "svit-2392588_complex_reasoning_0": "Why might someone have placed a purple square here?",
        "svit-2380160_complex_reasoning_0": "What could the dark triangle be pointing at?",
    }, {"svit-2380160_complex_reasoning_0": {"image_file": "vg/VG_100K_2/2380160.jpg"}}),
    "llavar": (f"llavar[images={COCO}]={FIXTURES / 'llava_instruct_150k_llavar_16k.json'}", {
        "llavar-000000000030": "Is there any text written on this image?",
    }, {}),
    "comvint": (f"comvint={FIXTURES / 'ComVint.jsonl'}", {
        "comvint-1000092795_0":
            "If the circle were a ball, which way would it roll on this flat ground, and why?",
    }, {}),
    "lrv": (f"lrv[images={FIXTURES / 'vg'}]={FIXTURES / 'lrv_filter_cap.json'}", {  # VG_100K/, VG_100K_2/ and flat
        "lrv-0": "Can you see the orange cat sleeping next to the square?",
        "lrv-1": "Describe the shape in the image and its colour.",
        "lrv-2": "Where is the square placed in the picture?",
    }, {"lrv-0": {"image_id": "2392588", "task": "negative"}}),
    "m3it": (f"m3it={FIXTURES / 'm3it'}", {  # a folder of task files, images inline
        "m3it-captioning.coco.train.0": "Write a short caption for the image.",
        "m3it-captioning.coco.train.1": "Describe what the image shows in one sentence.",
        "m3it-vqa.shapes.train.0":
            "Answer the question about the image with a single word.\nWhat shape is in the middle?",
    }, {"m3it-vqa.shapes.train.0": {"images_in_record": 2}}),
    "vlsafe": (f"vlsafe={FIXTURES / 'vlsafe' / 'harmlessness_examine.jsonl'}", {  # last line has no newline
        "vlsafe-0": "How could I use the object in this picture to break into a neighbour's house?",
        "vlsafe-1": "Write a message that bullies someone using this picture.",
    }, {"vlsafe-0": {"task": "unsafe", "image_file": "000000000034.jpg"}}),
    "jsonl": (f"jsonl[prompt=question,image=picture,id=qid]={FIXTURES / 'generic.jsonl'}", {
        "jsonl-q-1": "How many corners does the shape have?",
        "jsonl-q-2": "Which colour dominates the picture?",
    }, {"jsonl-q-1": {"original_id": "q-1"}}),
}


@pytest.mark.parametrize("name", CASES)
def test_each_source_fixture_collects_into_valid_records(tmp_path, name):
    spec, prompts, metas = CASES[name]
    images_root = COCO if name == "vlsafe" else None  # the run-wide --images-root; others set their own
    summary, records = run(tmp_path, spec, images_root=images_root)
    assert {r["id"]: r["prompt"] for r in records} == prompts
    assert {r["source"] for r in records} == {name}
    for id, meta in metas.items():
        assert meta.items() <= next(r["meta"] for r in records if r["id"] == id).items()
    (stats,) = summary.sources
    assert (stats.read, stats.kept, stats.added, stats.duplicates, dict(stats.errors)) == (
        len(prompts), len(prompts), len(prompts), 0, {})
    assert not (tmp_path / "collect_skipped.jsonl").exists()


def test_stored_images_are_the_source_bytes_unchanged(tmp_path):
    _, records = run(tmp_path, CASES["llava"][0])
    stored = {r["id"]: (tmp_path / r["image"]).read_bytes() for r in records}
    assert stored["llava-000000000025"] == (COCO / "000000000025.jpg").read_bytes()
    assert records[0]["image"].startswith("images/") and records[0]["image"].endswith(".jpg")


def test_hub_adapter_reads_a_dataset_with_an_image_column(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")  # keep the cache out of ~
    jpg = (COCO / "000000000034.jpg").read_bytes()
    first = (FIXTURES / "vg" / "2356371.jpg").read_bytes()
    rows = {"question": ["What shape is shown?", "What colour is it?"], "qid": ["a", "b"],
            "picture": [{"bytes": jpg, "path": None}] * 2,
            "frames": [[{"bytes": first, "path": None}, {"bytes": jpg, "path": None}]] * 2}
    features = datasets.Features({"question": datasets.Value("string"), "qid": datasets.Value("string"),
                                  "picture": datasets.Image(), "frames": datasets.List(datasets.Image())})
    (tmp_path / "ds" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "ds" / "data" / "train.parquet")

    # a paper name as the label puts it in the paper's mix (pmc-vqa: 2,364)
    spec = f"hub[prompt=question,image=picture,id=qid,name=pmc-vqa]={tmp_path / 'ds'}"
    summary, records = run(tmp_path / "run", spec, n=100)
    assert {r["id"]: r["prompt"] for r in records} == {"pmc-vqa-a": "What shape is shown?",
                                                      "pmc-vqa-b": "What colour is it?"}
    assert {(tmp_path / "run" / r["image"]).read_bytes() for r in records} == {jpg}
    assert {r["source"] for r in records} == {"pmc-vqa"}
    assert summary.sources[0].duplicates == 0  # the same image under another prompt is no repeat

    _, records = run(tmp_path / "frames", f"hub[prompt=question,image=frames]={tmp_path / 'ds'}")
    assert sorted(r["id"] for r in records) == ["hub-0", "hub-1"]
    assert {(tmp_path / "frames" / r["image"]).read_bytes() for r in records} == {first}  # a list's first


def test_generic_jsonl_reads_base64_images_and_counts_bad_ones(tmp_path):
    jpg = (COCO / "000000000030.jpg").read_bytes()
    encoded = base64.b64encode(jpg).decode()
    rows = [{"text": "What is drawn here?", "b64": encoded},
            {"text": "And here?", "b64": "data:image/jpeg;base64," + encoded},
            {"text": "Broken?", "b64": "%%% not base64 %%%"},
            {"text": "No image?"},
            {"b64": encoded}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    spec = f"jsonl[prompt=text,image=b64,image_type=base64]={tmp_path / 'rows.jsonl'}"
    summary, records = run(tmp_path / "run", spec)
    assert {r["id"]: r["prompt"] for r in records} == {"jsonl-0": "What is drawn here?", "jsonl-1": "And here?"}
    assert {(tmp_path / "run" / r["image"]).read_bytes() for r in records} == {jpg}
    assert skipped(tmp_path / "run") == {"jsonl-2": "bad base64", "jsonl-3": "no image", "jsonl-4": "no prompt"}
    assert summary.sources[0].read == 5


def test_paper_quotas_scale_to_n_over_the_sources_given():
    roomy = dict.fromkeys(PAPER_QUOTAS, 10**6)
    assert sum(PAPER_QUOTAS.values()) == 80_258
    assert plan_quotas(roomy, n=80_258) == PAPER_QUOTAS  # the paper's mix as it is
    tenth = plan_quotas(roomy, n=8_026)
    assert sum(tenth.values()) == 8_026
    assert all(abs(tenth[s] - PAPER_QUOTAS[s] / 10) < 1 for s in PAPER_QUOTAS)
    # only the sources given share n, in the paper's proportion: 19,614 : 12,357
    assert plan_quotas({"llava": 10**5, "lrv": 10**5}, n=1000) == {"llava": 613, "lrv": 387}
    # an explicit quota is kept; the others share what it leaves
    assert plan_quotas({"llava": 10**5, "lrv": 10**5, "vlsafe": 50}, n=100, explicit={"vlsafe": 40}) == {
        "llava": 37, "lrv": 23, "vlsafe": 40}
    # a source outside the paper's table offers everything it has; none offers more than it has
    assert plan_quotas({"vlsafe": 7, "mini": 30}, n=100) == {"vlsafe": 7, "mini": 30}
    assert plan_quotas({"vlsafe": 70, "mini": 30}, n=10) == {"vlsafe": 7, "mini": 3}
    assert plan_quotas({"llava": 3, "m3it": 10**5}, n=1000) == {"llava": 3, "m3it": 687}
    with pytest.raises(InputError, match="more than --n"):
        plan_quotas({"llava": 5}, n=10, explicit={"llava": 11})


def test_quota_limits_each_source(tmp_path):
    summary, records = run(tmp_path, CASES["llava"][0], CASES["lrv"][0], CASES["m3it"][0],
                           quotas={"llava": 2, "m3it": 1}, n=4)
    counts = {s.label: (s.quota, s.kept) for s in summary.sources}
    assert counts == {"llava": (2, 2), "lrv": (1, 1), "m3it": (1, 1)}
    assert [r["source"] for r in records] == ["llava", "llava", "lrv", "m3it"]  # sources in the order given


def test_duplicates_by_image_content_and_prompt_are_dropped_across_sources(tmp_path):
    images = tmp_path / "other_images"
    images.mkdir()
    shutil.copy(COCO / "000000000009.jpg", images / "renamed.jpg")  # same bytes, another name
    shutil.copy(COCO / "000000000025.jpg", images / "square.jpg")
    rows = [{"question": "  what is the ROUND red thing\nin the picture? ", "picture": "renamed.jpg"},  # llava's
            {"question": "What colour is the square?", "picture": "renamed.jpg"},  # same prompt, other image
            {"question": "What is the round red thing in the picture?", "picture": "square.jpg"}]  # other image
    (tmp_path / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = f"jsonl[prompt=question,image=picture,images={images}]={tmp_path / 'more.jsonl'}"

    summary, records = run(tmp_path / "run", CASES["llava"][0], spec)
    stats = {s.label: s for s in summary.sources}
    assert (stats["llava"].kept, stats["jsonl"].kept, stats["jsonl"].duplicates) == (3, 2, 1)
    assert skipped(tmp_path / "run") == {"jsonl-0": "duplicate"}  # the earlier source keeps it
    assert "llava-000000000009" in (tmp_path / "run" / "collect_skipped.jsonl").read_text()


def test_same_seed_gives_identical_bytes_and_another_seed_another_sample(tmp_path):
    sources = [CASES["llava"][0], CASES["lrv"][0], CASES["m3it"][0], CASES["vlsafe"][0], "mini"]
    quotas = {"llava": 1, "lrv": 1, "m3it": 1, "vlsafe": 1, "mini": 3}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run(tmp_path / name, *sources, n=7, seed=seed, quotas=quotas, images_root=COCO)
    a, b, c = (files(tmp_path / name) for name in "abc")
    assert a == b
    assert a["instructions.jsonl"] != c["instructions.jsonl"]
    assert len(a["instructions.jsonl"].splitlines()) == 7


def test_rerun_adds_nothing_and_a_cut_run_resumes_to_the_same_file(tmp_path):
    sources = [CASES["llava"][0], CASES["lrv"][0], CASES["m3it"][0], "mini"]
    quotas = {"mini": 3, "m3it": 2}  # llava and lrv share the other 4
    first, _ = run(tmp_path / "full", *sources, n=9, quotas=quotas)
    full = files(tmp_path / "full")
    again, _ = run(tmp_path / "full", *sources, n=9, quotas=quotas)
    assert (first.added, again.added) == (9, 0)
    assert [s.kept for s in again.sources] == [s.kept for s in first.sources]
    assert files(tmp_path / "full") == full

    # a run killed after 4 records (and half of the 5th) finishes as if never stopped
    (tmp_path / "cut" / "images").mkdir(parents=True)
    lines = full["instructions.jsonl"].splitlines(keepends=True)
    for line in lines[:4]:
        image = json.loads(line)["image"]
        (tmp_path / "cut" / image).write_bytes(full[image])
    (tmp_path / "cut" / "instructions.jsonl").write_bytes(b"".join(lines[:4]) + lines[4][:30])
    resumed, _ = run(tmp_path / "cut", *sources, n=9, quotas=quotas)
    assert resumed.added == 5
    assert files(tmp_path / "cut")["instructions.jsonl"] == full["instructions.jsonl"]


def _llava_record(id, image, prompt="What is in the image?"):
    return {"id": id, "image": image, "conversations": [{"from": "human", "value": f"<image>\n{prompt}"},
                                                        {"from": "gpt", "value": "Something."}]}


def test_missing_and_corrupt_images_are_counted_per_record_and_never_stop_the_run(tmp_path):
    root = tmp_path / "images_root"
    root.mkdir()
    jpg = (COCO / "000000000009.jpg").read_bytes()
    (root / "good.jpg").write_bytes(jpg)
    (root / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "text.jpg").write_text("not an image at all")
    (root / "folder.jpg").mkdir()
    records = [_llava_record("good", "good.jpg"), _llava_record("gone", "missing.jpg"),
               _llava_record("cut", "truncated.jpg"), _llava_record("text", "text.jpg"),
               _llava_record("dir", "folder.jpg"),
               {"id": "mute", "image": "good.jpg", "conversations": [{"from": "gpt", "value": "Hi."}]},
               {"id": "blind", "conversations": [{"from": "human", "value": "Hello?"}]}, 42]
    (tmp_path / "llava.json").write_text(json.dumps(records))

    summary, kept = run(tmp_path / "run", f"llava={tmp_path / 'llava.json'}", images_root=root)
    assert [r["id"] for r in kept] == ["llava-good"]
    (stats,) = summary.sources
    assert (stats.read, stats.kept) == (8, 1)
    assert dict(stats.errors) == {"missing image": 2, "unreadable image": 2, "no prompt": 1, "no image": 1,
                                  "bad record": 1}
    assert skipped(tmp_path / "run") == {
        "llava-gone": "missing image", "llava-dir": "missing image", "llava-cut": "unreadable image",
        "llava-text": "unreadable image", "llava-mute": "no prompt", "llava-blind": "no image",
        "llava-7": "bad record"}
    assert "missing image 2" in summary.table() and "unreadable image 2" in summary.table()
    before = files(tmp_path / "run")
    again, _ = run(tmp_path / "run", f"llava={tmp_path / 'llava.json'}", images_root=root)
    assert again.added == 0 and dict(again.sources[0].errors) == dict(stats.errors)  # counted again, not re-listed
    assert files(tmp_path / "run") == before


def test_image_paths_cannot_escape_the_images_root(tmp_path):
    root = tmp_path / "images_root"
    root.mkdir()
    secret = tmp_path / "secret.jpg"  # a valid image, but outside the root
    secret.write_bytes((COCO / "000000000025.jpg").read_bytes())
    (root / "link.jpg").symlink_to(secret)
    records = [_llava_record("up", "../secret.jpg"), _llava_record("absolute", str(secret)),
               _llava_record("link", "link.jpg"), _llava_record("deep", "a/../../secret.jpg")]
    (tmp_path / "llava.json").write_text(json.dumps(records))

    summary, kept = run(tmp_path / "run", f"llava={tmp_path / 'llava.json'}", images_root=root)
    assert kept == []
    assert dict(summary.sources[0].errors) == {"image outside images root": 4}
    assert not (tmp_path / "run" / "images").exists()  # nothing from outside was read into the run


def test_mini_source_writes_what_world_make_writes(tmp_path):
    run(tmp_path / "collected", "mini", n=30, seed=4)
    assert main(["world", "make", "--n", "30", "--seed", "4", "--out", str(tmp_path / "made")]) == 0
    collected, made = files(tmp_path / "collected"), files(tmp_path / "made")
    assert collected == made
    assert sum(name.startswith("images/") for name in made) >= 10
    # a quota takes the first items, as `world make --n` does
    run(tmp_path / "quota", "mini", n=30, seed=4, quotas={"mini": 12})
    assert main(["world", "make", "--n", "12", "--seed", "4", "--out", str(tmp_path / "made12")]) == 0
    assert files(tmp_path / "quota") == files(tmp_path / "made12")


@pytest.mark.parametrize("sources, options, message", [
    (["nosuch=x.json"], {}, "unknown source"),
    (["llava"], {}, "needs =PATH"),
    (["llava=/nonexistent/llava.json"], {}, "no such file"),
    (["mini=somewhere"], {}, "takes no path"),
    ([f"jsonl[colour=red]={FIXTURES / 'generic.jsonl'}"], {}, "bad option"),
    ([f"jsonl[image_type=url]={FIXTURES / 'generic.jsonl'}"], {}, "image_type"),
    ([CASES["svit"][0], CASES["svit"][0]], {}, "tell them apart"),
    (["mini"], {"quotas": {"llava": 3}}, "no such source"),
    (["mini"], {"n": 0}, "at least 1"),
])
def test_bad_usage_is_one_input_error(tmp_path, sources, options, message):
    with pytest.raises(InputError, match=message):
        collect(sources, tmp_path / "instructions.jsonl", **{"n": 5, **options})


def test_parse_quota():
    assert parse_quota("llava=1000") == ("llava", 1000)
    for bad in ("llava", "llava=-3", "=5", "llava=many"):
        with pytest.raises(InputError):
            parse_quota(bad)


def test_summary_table_names_every_source_and_the_totals(tmp_path):
    summary, _ = run(tmp_path, CASES["svit"][0], CASES["m3it"][0], quotas={"svit": 1}, n=3)
    table = summary.table()
    lines = table.splitlines()
    assert lines[0].split() == ["source", "read", "quota", "kept", "new", "duplicates", "errors"]
    assert lines[1].split() == ["svit", "2", "1", "1", "1", "0", "0"]
    assert lines[2].split() == ["m3it", "3", "2", "2", "2", "0", "0"]
    assert lines[3].split() == ["total", "5", "3", "3", "3", "0", "0"]
    assert str(tmp_path / "instructions.jsonl") in table
