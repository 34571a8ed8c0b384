"""Benchmark scoring and the paired comparison: pure functions, no model."""

import json
import random
from pathlib import Path

import pytest

from silkie import InputError
from silkie.eval import compare, load, mme, mme_score, mmhal, mmvet, runner, save

# The shared folder sits beside the repository (../shared), never inside it.
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "mme"
needs_golden = pytest.mark.skipif(not (GOLDEN / "LaVIN").is_dir(),
                                  reason=f"MME golden files absent ({GOLDEN}: the shared folder beside the repo)")

LAVIN = {"existence": 185.0, "count": 88.3333, "position": 63.3333, "color": 75.0, "posters": 79.5918,
         "celebrity": 47.3529, "scene": 136.75, "landmark": 93.5, "artwork": 87.25, "OCR": 107.5,
         "commonsense_reasoning": 87.1429, "numerical_calculation": 65.0, "text_translation": 47.5,
         "code_reasoning": 50.0}


# -- MME -----------------------------------------------------------------------------------------

@needs_golden
def test_mme_golden_lavin_matches_the_official_tool():
    scores = mme_score(GOLDEN / "LaVIN")
    assert scores["perception"] == 963.6114
    assert scores["cognition"] == 249.6429
    assert {name: s["score"] for name, s in scores["subtasks"].items()} == LAVIN


@needs_golden
def test_mme_question_template_has_every_question():
    questions = mme.read_questions(GOLDEN / "questions")
    assert len(questions) == 2374
    assert {q["subtask"] for q in questions} == set(mme.SUBTASKS)
    assert {q["answer"] for q in questions} == {"yes", "no"}


@pytest.mark.parametrize("response, expected", [
    ("Yes", "yes"), (" yes", "yes"), ("Yesterday", "yes"), ("Not sure", "no"), ("no.", "no"),
    ("NO", "no"), ("I think yes", "other"), ("\nyes", "yes"), ("", "other"), ("yes\n", "yes"),
    ("  yes", "other"),  # "yes" starts past the 4th character: the response is never stripped
    ("The answer is no", "other"), ("nope", "no")])
def test_mme_answer_rule(response, expected):
    assert mme.answer(response) == expected


def test_mme_write_then_read_round_trip_flattens_and_scores(tmp_path):
    # two images share a name across subtasks: they must stay separate groups
    rows = [("existence", "a.jpg", "Is there a cat?", "yes", "Yes\tit is"),
            ("existence", "a.jpg", "Is there a dog?", "no", "\nno\nreally"),
            ("color", "a.jpg", "Is it red?", "yes", "No"),
            ("color", "a.jpg", "Is it blue?", "no", "maybe"),
            ("code_reasoning", "c.png", "Prints 3?", "yes", "yes"),
            ("code_reasoning", "c.png", "Prints 4?", "no", "no")]
    preds = [dict(zip(("subtask", "image", "question", "answer", "response"), row)) for row in rows]
    mme.write_results(tmp_path, preds)
    lines = (tmp_path / "existence.txt").read_text().splitlines()
    assert lines == ["a.jpg\tIs there a cat?\tYes\tYes it is", "a.jpg\tIs there a dog?\tNo\t no really"]
    scores = mme.score(mme.read_results(tmp_path))
    assert scores["subtasks"]["existence"] == {"acc": 100.0, "acc_plus": 100.0, "score": 200.0, "other": 0}
    assert scores["subtasks"]["color"] == {"acc": 0.0, "acc_plus": 0.0, "score": 0.0, "other": 1}
    assert scores["perception"] == 200.0 and scores["cognition"] == 200.0


def test_mme_rejects_an_image_without_two_questions(tmp_path):
    (tmp_path / "count.txt").write_text("x.jpg\tHow many? Two?\tYes\tyes\n")
    with pytest.raises(InputError, match="exactly 2"):
        mme.score(mme.read_results(tmp_path))
    (tmp_path / "count.txt").write_text("x.jpg\tq\tmaybe\tyes\n")
    with pytest.raises(InputError, match="count.txt:1"):
        mme.read_results(tmp_path)


def test_mme_reads_the_release_layout(tmp_path):
    nested = tmp_path / "artwork"
    (nested / "images").mkdir(parents=True)
    (nested / "questions_answers_YN").mkdir()
    (nested / "images" / "10.jpg").write_bytes(b"")
    (nested / "questions_answers_YN" / "10.txt").write_text("Is it by Monet?\tYes\nIs it by Dali?\tNo\n")
    flat = tmp_path / "OCR"
    flat.mkdir()
    (flat / "0001.png").write_bytes(b"")
    (flat / "0001.txt").write_text("Does it say STOP?\tYes\nDoes it say GO?\tNo\n")
    questions = mme.read_questions(tmp_path)
    assert [(q["subtask"], q["image"], q["answer"]) for q in questions] == [
        ("artwork", "10.jpg", "yes"), ("artwork", "10.jpg", "no"),
        ("OCR", "0001.png", "yes"), ("OCR", "0001.png", "no")]
    assert questions[0]["image_path"].endswith("artwork/images/10.jpg")


# -- MMHal-Bench ---------------------------------------------------------------------------------

def official_rule(reply: str) -> int:
    """The official script's rule, restated for the test: "rating: s" for s in 0..6 in the lower-cased
    reply, exactly one distinct s or 0."""
    found = {s for s in range(7) if f"rating: {s}" in reply.lower()}
    return found.pop() if len(found) == 1 else 0


# (reply, score by the official rule, valid: exactly one rating found)
MMHAL_REPLIES = [
    ("The answer invents a dog.\n**Rating: 4**", 4, True),   # markdown around it
    ("rating: 2", 2, True),
    ("RATING: 6", 6, True),                                   # any case
    ("RaTiNg: 5, very informative", 5, True),
    ("RATING:6", 0, False),                                   # no space after the colon
    ("rating:5", 0, False),
    ("Rating:  5", 0, False),                                 # two spaces
    ("Rating:\t5", 0, False),                                # a tab
    ("Rating : 5", 0, False),                                 # a space before the colon
    ("Rating: 10", 1, True),                                  # holds "rating: 1"
    ("rating: 60", 6, True),                                  # holds "rating: 6"
    ("Rating: 7", 0, False),                                  # out of range: nothing found
    ("Rating: 3 ... so, again, Rating: 3", 3, True),          # one distinct rating
    ("Rating: 2 or maybe Rating: 5", 0, False),               # two ratings
    ("Rating: 1\nRating: 10", 1, True),                       # both read as 1
    ("Rating: 10, not Rating: 0", 0, False),                  # 1 and 0
    ("- **Rating**: 4", 0, False),                            # markdown between word and colon
    ("**Rating:** 4", 0, False),                              # markdown between colon and digit
    ("Overall rating: 3/6", 3, True),                         # any text around it
    ("My rating: 4.5", 4, True),
    ("Rating: -2", 0, False),
    ("Rating: N", 0, False),
    ("No score given.", 0, False),
    ("", 0, False),
    ("Rating: 6\n(The scale: Rating: 0 means ...)", 0, False),  # a quoted scale counts too
    ("ratings: 4", 0, False),                                 # "ratings:" is not "rating:"
    ("Final Rating: 3\n", 3, True),
]


@pytest.mark.parametrize("reply, score, valid", MMHAL_REPLIES)
def test_mmhal_parse_is_the_official_rule(reply, score, valid):
    assert official_rule(reply) == score
    assert mmhal.parse(reply) == (score, valid)


def test_mmhal_prompt_fills_every_placeholder_literally():
    record = {"image_content": ["Dog", "Frisbee"], "question": "What is the dog holding?",
              "gt_answer": "A red frisbee.", "model_answer": "A ball {not json}."}
    text = mmhal.prompt(record)
    assert "Dog, Frisbee" in text and "A red frisbee." in text and "A ball {not json}." in text
    assert not any(p in text for p in mmhal.PLACEHOLDERS.named)
    custom = 'Return {"rating": n}. Labels={image_content} Q={question} R={gt_answer} A={model_answer}'
    assert mmhal.prompt(record, custom).startswith('Return {"rating": n}. Labels=Dog, Frisbee Q=What')
    assert runner.check_template(mmhal.TEMPLATE, mmhal.PLACEHOLDERS) == "named"
    assert runner.check_template(custom, mmhal.PLACEHOLDERS) == "named"
    with pytest.raises(InputError, match="model_answer"):
        runner.check_template("{image_content} {question} {gt_answer}", mmhal.PLACEHOLDERS)


def test_mmhal_positional_template_is_filled_as_the_official_script_does():
    record = {"image_content": ["Dog", "Frisbee"], "question": "What {is} it?", "gt_answer": "A frisbee.",
              "model_answer": "A ball {not json}."}
    template = "{{keep}} L={}\nQ={}\nR={}\nA={}\n"
    assert runner.check_template(template, mmhal.PLACEHOLDERS) == "positional"
    text = mmhal.prompt(record, template, "positional")
    assert text == "{keep} L=Dog, Frisbee\nQ=What {is} it?\nR=A frisbee.\nA=A ball {not json}.\n"
    assert text == template.format(", ".join(record["image_content"]), record["question"], record["gt_answer"],
                                   record["model_answer"])


@pytest.mark.parametrize("template, found", [
    ("{} {} {}", "found 3 {} placeholders"),
    ("{} {} {} {} {}", "found 5 {} placeholders"),
    ("no fields at all", "found 0 {} placeholders"),
    ("{0} {1} {2} {3}", "fields other than bare {}"),
    ("{} {} {} {:>5}", "fields other than bare {}"),
    ("{} {} {} {} {", "unbalanced braces"),
    ("{} {question} {gt_answer} {model_answer}", "fields other than bare {}"),
])
def test_mmhal_positional_template_with_the_wrong_fields_is_refused_naming_the_file(template, found):
    with pytest.raises(InputError, match=r"^--judge-template t\.txt: expected 4 positional") as error:
        runner.check_template(template, mmhal.PLACEHOLDERS, "--judge-template t.txt")
    assert found in str(error.value)


def test_official_script_template_is_read_without_running_it(tmp_path):
    script = tmp_path / "eval_script.py"
    script.write_text("import sys\ntemplate = 'old {}'\ntemplate: str = 'A {} B {} C {} D {}'\nsys.exit('ran')\n")
    assert runner.script_string(script, "template") == "A {} B {} C {} D {}"  # the last assignment, as run
    judge = runner.Grader.from_file(script, mmhal.PLACEHOLDERS, model="m")
    assert judge.template == "A {} B {} C {} D {}" and judge.form == "positional"
    assert mmhal.protocol(judge).startswith("official template (sha256 ") and "differs" in mmhal.protocol(judge)
    for text, message in [("template = make()\n", "no module-level string literal"), ("x = 1\n", "`template"),
                          ("def f(:\n", "not a Python script"), ("template = 'A {} B {}'\n", "found 2")]:
        script.write_text(text)
        with pytest.raises(InputError, match=message) as error:
            runner.Grader.from_file(script, mmhal.PLACEHOLDERS)
        assert str(script) in str(error.value)
    assert mmhal.protocol(runner.Grader()) == mmhal.OURS


def test_mmhal_aggregation_by_type_and_hallucination_rate():
    ratings = [6, 5, 4, 3, 2, 1, 0, "x"] * 2  # 16 records cycling the 8 types twice
    # the type is the index % 8 in file order, as the official script has it, whatever the record says
    items = [mmhal.item(i, {"question": "q", "question_type": "other"}, f"Rating: {r}") for i, r in enumerate(ratings)]
    scores = mmhal.score(items)
    assert scores["n"] == 16 and scores["invalid"] == 2
    assert scores["score"] == pytest.approx(21 / 8, abs=1e-4)
    assert scores["hallucination_rate"] == 0.5  # 2, 1, 0 and the invalid reply
    assert scores["types"]["attribute"] == 6 and scores["types"]["other"] == 0
    assert list(scores["types"]) == list(mmhal.TYPES)


# -- MM-Vet --------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, expected", [
    ("0.5", 0.5), ("1.0", 1.0), (" 0", 0.0), ("0.7 (mostly right)", 0.7), (".3", 0.3),
    ("1.5", None), ("Score: 0.4", None), ("", None), ("-0.2", None)])
def test_mmvet_parse(reply, expected):
    assert mmvet.parse(reply) == expected


def test_mmvet_aggregation_over_runs_and_capabilities():
    items = [mmvet.item("1", ["rec"], [1.0, 0.5]),
             mmvet.item("2", ["ocr", "math"], [0.0, 0.5]),
             mmvet.item("3", ["rec", "ocr"], [0.5, None])]  # invalid grade counts 0
    scores = mmvet.score(items)
    # run totals: (1 + 0 + .5)/3 = 50.0 and (.5 + .5 + 0)/3 = 33.33
    assert scores["total"] == pytest.approx((50 + 100 / 3) / 2, abs=0.01)
    assert scores["total_std"] == pytest.approx(11.79, abs=0.01)  # sample std of the two runs
    assert scores["capabilities"]["rec"] == {"mean": 50.0, "std": 35.36}  # runs 75 and 25
    # sample 3 counts toward both rec and ocr; ocr runs are 25 and 25
    assert scores["capabilities"]["ocr"] == {"mean": 25.0, "std": 0.0}
    assert scores["capabilities"]["math"] == {"mean": 25.0, "std": 35.36}
    assert scores["runs"] == 2 and scores["invalid"] == 1
    assert "{question}" not in mmvet.prompt({"question": "What | is\nit?", "answer": "a", "model_answer": "b"})
    assert "What / is it? | a | b |" in mmvet.prompt({"question": "What | is\nit?", "answer": "a", "model_answer": "b"})


# -- paired statistics ---------------------------------------------------------------------------

def test_mcnemar_exact_by_hand():
    # 1 vs 9 discordant: P(X <= 1) for Bin(10, 1/2) = 11/1024, two-sided doubles it
    assert compare.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert compare.mcnemar_exact(9, 1) == compare.mcnemar_exact(1, 9)
    assert compare.mcnemar_exact(5, 5) == 1.0 and compare.mcnemar_exact(0, 0) == 1.0
    assert compare.mcnemar_exact(0, 3000) < 1e-300  # exact for thousands of items, no underflow to nonsense
    assert compare.mcnemar_exact(1500, 1500) == 1.0


def _scores(n, mean, rng):
    return [min(6, max(0, round(rng.gauss(mean, 1.5)))) for _ in range(n)]


def test_bootstrap_ci_covers_the_true_delta_and_excludes_zero():
    rng = random.Random(3)
    base = [mmhal.item(i, {"question": "q"}, f"Rating: {s}") for i, s in enumerate(_scores(400, 3.0, rng))]
    # trained = base + 1 on every item where that stays in range: the true delta is known exactly
    trained = [dict(it, score=min(6, it["score"] + 1)) for it in base]
    true_delta = sum(t["score"] - b["score"] for b, t in zip(base, trained)) / len(base)
    result = compare.compare_benchmark("mmhal", base, trained, resamples=500, seed=0)
    ci = result["metrics"]["score"]["ci"]
    assert result["metrics"]["score"]["delta"] == pytest.approx(true_delta)
    assert ci[0] <= true_delta <= ci[1] and ci[0] > 0
    # a noisy null: independent re-draws of the same quality give a CI straddling 0
    noisy = [dict(it, score=s) for it, s in zip(base, _scores(400, 3.0, rng))]
    null = compare.compare_benchmark("mmhal", base, noisy, resamples=500, seed=0)["metrics"]["score"]
    assert null["ci"][0] < 0 < null["ci"][1]
    # seeded: the same call gives the same interval
    assert compare.compare_benchmark("mmhal", base, trained, resamples=500, seed=0)["metrics"]["score"]["ci"] == ci


def _mme_items(p_right, seed, subtasks=("existence", "color", "code_reasoning"), images=60):
    rng = random.Random(seed)
    items = []
    for subtask in subtasks:
        for i in range(images):
            for k, gt in enumerate(("yes", "no")):
                response = gt if rng.random() < p_right else "other answer"
                items.append({"id": f"{subtask}/img{i}.jpg/{k}", "subtask": subtask, "image": f"img{i}.jpg",
                              "answer": gt, "response": response, "pred": mme.answer(response),
                              "correct": mme.answer(response) == gt})
    return items


def test_compare_folders_writes_tables_and_model_index_results(tmp_path):
    base_items, trained_items = _mme_items(0.6, seed=1), _mme_items(0.9, seed=2)
    save(tmp_path / "eval" / "base", "mme", base_items)
    save(tmp_path / "eval" / "trained", "mme", trained_items)
    # a benchmark without a module of its own is compared generically
    save(tmp_path / "eval" / "base", "custom", [{"id": str(i), "correct": i % 3 == 0} for i in range(30)])
    save(tmp_path / "eval" / "trained", "custom", [{"id": str(i), "correct": i % 3 != 1} for i in range(30)])
    assert load(tmp_path / "eval" / "trained", "mme") == trained_items
    result = compare.compare(tmp_path / "eval" / "base", tmp_path / "eval" / "trained", resamples=300)
    perception = result["mme"]["metrics"]["perception"]
    assert perception["trained"] == pytest.approx(mme.score(trained_items)["perception"], abs=1e-3)
    assert perception["ci"][0] > 0  # a 0.6 -> 0.9 per-question improvement is clear
    assert result["mme"]["mcnemar"]["c"] > result["mme"]["mcnemar"]["b"] and result["mme"]["mcnemar"]["p"] < 1e-6
    assert result["custom"]["metrics"]["accuracy"]["delta"] == pytest.approx(20 / 30 - 10 / 30)
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results) == {"mme", "custom"}
    assert set(results["mme"]) == {"perception", "cognition"}
    assert all(isinstance(v, float) for ms in results.values() for v in ms.values())
    table = (tmp_path / "eval" / "comparison.md").read_text()
    assert "### mme (360 items paired)" in table and "| perception |" in table and "McNemar exact test" in table


def test_compare_pairs_by_id_and_reports_the_unpaired():
    base = [{"id": str(i), "score": 1.0} for i in range(10)]
    trained = [{"id": str(i), "score": 2.0} for i in range(3, 12)]
    result = compare.compare_benchmark("judged", base, trained, resamples=50)
    assert result["n"] == 7 and result["unpaired"] == 5 and "mcnemar" not in result
    assert result["metrics"]["score"]["delta"] == 1.0
    with pytest.raises(InputError, match="share no item"):
        compare.compare_benchmark("judged", base[:2], trained[-2:], resamples=10)
