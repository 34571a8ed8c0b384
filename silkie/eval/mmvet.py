"""MM-Vet (Yu et al., 2023): 218 open questions over six capabilities (rec, ocr, know, gen, spat,
math), each answer graded 0.0-1.0 by a few-shot LLM grader against the reference. Total = mean x 100;
a sample counts toward every capability it lists. The grader is not deterministic, so several
grading runs are averaged and their spread reported.

The grader prompt below is our own wording with the official shape (instructions, a table of
graded examples, then the row to grade). References may use <AND> (all parts needed) and <OR>
(any one suffices).

`run` reads the release (`mm-vet.json`: {"v1_0": {"imagename", "question", "answer", "capability":
[...]}, ...} beside `images/`), answers every sample, and grades each answer `runs` times; run r
sends the grader seed r, so the runs are distinct requests and the spread is the grader's own.
It also writes DIR/mmvet/answers.json ({id: answer}), the file the official grader reads.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from silkie import InputError
from silkie.eval.common import write_scored

NAME = "mmvet"
CAPABILITIES = ("rec", "ocr", "know", "gen", "spat", "math")
DIGITS = 2  # MM-Vet tables carry one or two decimals
MAX_NEW_TOKENS = 512
RUNS = 5  # grading runs averaged
FILE = "mm-vet.json"
JUDGE_PROMPT = "silkie-mmvet-v1"  # names our wording in reports; a --judge-template is named by its hash
PLACEHOLDERS = ("{question}", "{gt_answer}", "{model_answer}")

TEMPLATE = """Grade how well an AI answer matches the reference answer to a question, with a score \
from 0.0 (wrong) to 1.0 (fully right). In the reference, <AND> joins parts that are all needed and \
<OR> joins alternatives of which any one is enough; give partial credit for partly right answers. \
For long free-form answers, judge whether the key points of the reference are present and correct. \
Reply with the score only.

Question | Reference | Answer | Score
What is 7 + 5? | 12 | 12 | 1.0
What is 7 + 5? | 12 | The sum is 13. | 0.0
Which two fruits are on the plate? | apple <AND> banana | An apple. | 0.5
Which two fruits are on the plate? | apple <AND> banana | A banana and an apple. | 1.0
What colour is the car? | red <OR> dark red | It is a red car. | 1.0
What does the sign say? | STOP | It says "SHOP". | 0.0
Why does he carry an umbrella? | it is raining <OR> rain is expected | It looks rainy; he stays dry. | 1.0
How many people are in the photo? | 4 | There are about five people. | 0.0
{question} | {gt_answer} | {model_answer} |"""

_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)")


def prompt(record: dict, template: str = TEMPLATE) -> str:
    """The grader prompt for one sample; table cells are flattened so a row stays one line."""
    def cell(text):
        return " ".join(str(text or "").split()).replace("|", "/")
    values = {"{question}": cell(record["question"]), "{gt_answer}": cell(record.get("answer")),
              "{model_answer}": cell(record.get("model_answer"))}
    for key, value in values.items():
        template = template.replace(key, value)
    return template


def parse(reply: str) -> float | None:
    """The grade a reply opens with, when it is a number in [0, 1]; None otherwise (invalid: the
    caller may ask again, and a sample still invalid at the end scores 0)."""
    match = _NUMBER.match(reply or "")
    if not match:
        return None
    value = float(match.group(1))
    return value if 0.0 <= value <= 1.0 else None


def item(sample_id: str, capabilities: list[str], grades: list[float | None]) -> dict:
    """One sample for items.jsonl: its grade in each run (None: invalid, counted as 0) and their mean."""
    runs = [0.0 if g is None else g for g in grades]
    return {"id": str(sample_id), "capabilities": list(capabilities), "runs": runs,
            "invalid": sum(g is None for g in grades), "score": sum(runs) / len(runs) if runs else 0.0}


def run_scores(items: list[dict], run: int) -> dict[str, float]:
    """Total and per-capability score (mean grade x 100) of one grading run."""
    caps = defaultdict(list)
    for it in items:
        for cap in it["capabilities"]:
            caps[cap].append(it["runs"][run])
    out = {"total": 100 * sum(it["runs"][run] for it in items) / len(items)}
    out.update({c: 100 * sum(v) / len(v) for c in (*CAPABILITIES, *sorted(set(caps) - set(CAPABILITIES)))
                if (v := caps.get(c))})
    return out


def score(items: list[dict]) -> dict:
    """{"total", "total_std", "capabilities": {cap: {"mean", "std"}}, "runs", "n", "invalid"}: each
    figure's mean over grading runs and its sample standard deviation (0 with one run)."""
    n_runs = min((len(it["runs"]) for it in items), default=0)
    if not items or not n_runs:
        return {"total": 0.0, "total_std": 0.0, "capabilities": {}, "runs": 0, "n": len(items), "invalid": 0}
    per_run = [run_scores(items, r) for r in range(n_runs)]

    def mean_std(key):
        values = [r[key] for r in per_run]
        return round(statistics.fmean(values), DIGITS), round(statistics.stdev(values) if len(values) > 1 else 0.0,
                                                              DIGITS)
    total, total_std = mean_std("total")
    return {"total": total, "total_std": total_std,
            "capabilities": {c: dict(zip(("mean", "std"), mean_std(c))) for c in per_run[0] if c != "total"},
            "runs": n_runs, "n": len(items), "invalid": sum(it.get("invalid", 0) for it in items)}


def units(items: list[dict]) -> dict[str, dict[str, list[float]]]:
    return {"": {it["id"]: [float(it["score"])] for it in items}}


def headline(means: dict[str, list[float]]) -> dict[str, float]:
    return {"total": 100 * means[""][0]}


correct = None  # graded 0-1, not a yes/no outcome: no McNemar test


# -- the run -------------------------------------------------------------------------------------

def read(data) -> list[dict]:
    """The release's samples: {"id", "prompt", "answer", "capabilities", "image_path"}."""
    from silkie.eval.runner import release_json

    path, samples = release_json(data, FILE)
    if not isinstance(samples, dict) or not samples:
        raise InputError(f"{path}: expected {{sample id: {{imagename, question, answer, capability}}}}")
    out = []
    for sid, sample in samples.items():
        missing = [k for k in ("imagename", "question", "answer", "capability") if k not in sample]
        if missing:
            raise InputError(f"{path}: sample {sid} has no {missing[0]!r}")
        out.append({"id": str(sid), "prompt": sample["question"], "question": sample["question"],
                    "answer": sample["answer"], "capabilities": list(sample["capability"]),
                    "image_path": path.parent / "images" / sample["imagename"]})
    return out


def run(spec, data, out, judge, runs: int = RUNS, log=print) -> dict:
    """`silkie eval mmvet`: answer every sample with the pool model `spec`, grade each answer `runs`
    times with `judge`, save DIR/mmvet/ (resumable; grades are cached). Returns the summary."""
    from silkie.eval.runner import PREDICTIONS, finish, lazy, predict

    if runs < 1:
        raise InputError("--runs must be at least 1")
    out = Path(out)
    samples = read(data)
    answers, added = predict(out / NAME / PREDICTIONS, samples, spec.model, spec.adapter, lazy(spec),
                             spec.generation, log=log)
    answered = [s for s in samples if not answers[s["id"]].get("error")]
    prompts = {s["id"]: prompt({**s, "model_answer": answers[s["id"]]["response"]}, judge.template or TEMPLATE)
               for s in answered}
    graded = [judge.ask(prompts, out, seed=r, log=log) for r in range(runs)]
    items = []
    for s in samples:
        failed = answers[s["id"]].get("error")
        replies = [g.get(s["id"], (None, None)) for g in graded]
        it = {**item(s["id"], s["capabilities"], [None if failed else parse(reply or "") for reply, _ in replies]),
              "response": answers[s["id"]]["response"], "replies": [reply for reply, _ in replies],
              "judge_model": judge.model}
        errors = [f"generation: {failed}"] if failed else \
            [f"judge run {r}: {e}" for r, (_, e) in enumerate(replies) if e]
        items.append({**it, "error": "; ".join(errors)} if errors else it)
    (out / NAME / "answers.json").write_text(
        json.dumps({s["id"]: answers[s["id"]]["response"] or "" for s in samples}, indent=2, ensure_ascii=False) + "\n")
    scores = write_scored(out, NAME, items, score)
    return finish(out, NAME, spec, data, added, judge={**judge.info(JUDGE_PROMPT), "runs": runs},
                  samples=len(items), errors=sum("error" in it for it in items), invalid=scores["invalid"],
                  total=scores["total"], total_std=scores["total_std"])
