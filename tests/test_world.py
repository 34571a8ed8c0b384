"""The mini world: deterministic scenes and instructions, MME-style yes/no pairs, valid records."""

import collections
import json

from silkie.cli import main
from silkie.io import load_image, read_checked
from silkie.world.make import generate
from silkie.world.scenes import CENTERS, COLORS, IMAGE_SIZE, Scene
from silkie.world.tasks import TASK_MIX, YES_NO_SUFFIX


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path):
    for name in ("a", "b"):
        assert main(["world", "make", "--n", "40", "--seed", "7", "--out", str(tmp_path / name)]) == 0
    assert main(["world", "make", "--n", "40", "--seed", "8", "--out", str(tmp_path / "c")]) == 0
    a, b, c = (files(tmp_path / name) for name in "abc")
    assert a == b
    assert a["instructions.jsonl"] != c["instructions.jsonl"]
    assert len([name for name in a if name.startswith("images/")]) >= 20


def test_rerun_and_growth_append_without_duplicates(tmp_path):
    main(["world", "make", "--n", "10", "--seed", "1", "--out", str(tmp_path)])
    first = (tmp_path / "instructions.jsonl").read_text().splitlines()
    main(["world", "make", "--n", "10", "--seed", "1", "--out", str(tmp_path)])
    assert (tmp_path / "instructions.jsonl").read_text().splitlines() == first
    main(["world", "make", "--n", "25", "--seed", "1", "--out", str(tmp_path)])
    grown = (tmp_path / "instructions.jsonl").read_text().splitlines()
    assert grown[:10] == first and len(grown) == 25 and len({json.loads(x)["id"] for x in grown}) == 25


def test_records_are_valid_and_images_match_their_scene(tmp_path):
    main(["world", "make", "--n", "60", "--seed", "3", "--out", str(tmp_path)])
    records = [r for _, r in read_checked(tmp_path / "instructions.jsonl")]
    assert len(records) == 60 and all(isinstance(r, dict) for r in records), records
    for record in records:
        assert record["source"] == "mini"
        image = load_image(tmp_path / record["image"])
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
        scene = Scene.from_dict(record["meta"]["scene"])
        for thing in scene.things:  # the pixel at each thing's centre has its colour
            x, y = (int(CENTERS[i] * IMAGE_SIZE) for i in (thing.col, thing.row))
            expected = COLORS[thing.color]
            assert max(abs(a - b) for a, b in zip(image.getpixel((x, y)), expected)) < 40, (record["id"], thing)


def test_yes_no_questions_come_in_opposite_pairs_per_image():
    records = [r for r, _ in generate(400, seed=0)]
    pairs = collections.defaultdict(list)
    for r in records:
        if r["meta"]["task"] == "yesno":
            pairs[r["id"].rsplit("-", 1)[0]].append(r)
    assert len(pairs) > 50
    subtasks = collections.Counter()
    for group in pairs.values():
        if len(group) < 2:  # only the last scene can be cut short by n
            assert group[0] is records[-1]
            continue
        assert sorted(r["meta"]["answer"] for r in group) == ["No", "Yes"]
        assert all(r["prompt"].endswith("?" + YES_NO_SUFFIX) for r in group)
        subtasks[group[0]["meta"]["subtask"]] += 1
    assert set(subtasks) == {"existence", "count", "color", "position"}


def test_every_task_kind_appears_and_items_do_not_depend_on_n():
    few = [r for r, _ in generate(30, seed=2)]
    many = [r for r, _ in generate(300, seed=2)]
    assert many[:30] == few
    assert {r["meta"]["task"] for r in many} == set(TASK_MIX)
    unsafe = [r for r in many if r["meta"]["task"] == "unsafe"]
    assert all(r["meta"]["answer"].startswith("Sorry, I can't help with that") for r in unsafe)
