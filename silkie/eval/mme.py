"""MME (Fu et al., 2023): yes/no questions, two per image, scored by the official eval tool's rules.

The rules, kept exactly because published numbers depend on them: the response is lower-cased (never
stripped); exactly "yes" or "no" counts as that answer, otherwise only its first 4 characters are
searched for "yes", then "no", and anything else is "other" (always wrong). Per subtask, acc is over
questions and acc+ over images whose two answers are both right; the subtask score is
100·acc + 100·acc+, and the perception and cognition totals are sums of subtask scores (at most 2000
and 800). Images are grouped by (subtask, image) since image names repeat across subtasks.

Result files are the eval tool's: `<subtask>.txt`, one line per question,
`image<TAB>question<TAB>gt<TAB>response`; responses are flattened (tabs and newlines become spaces)
before writing, since the format has no escaping.

`run` answers the official release (`<subtask>/` folders of images and question files, see
`read_questions`) with any pool model, writes the result files to `DIR/mme/results/` (which the
official tool and `silkie eval mme-score` read as they are) and scores them from there.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from silkie import InputError
from silkie.eval.common import write_scored
from silkie.grading import mme_answer as answer  # the rule above; the scene judge (world/) applies it too

NAME = "mme"
PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
              "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION
DIGITS = 4  # the published tables carry 4 decimals
MAX_NEW_TOKENS = 32  # only the first 4 characters count; the rest keeps a reply readable
RESULTS = "results"
_FLAT = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


def flatten(text: str) -> str:
    """One result-file field: each tab, CR or LF becomes a space (positions kept for the 4-char rule)."""
    return (text or "").translate(_FLAT)


# -- readers and writer --------------------------------------------------------------------------

def read_questions(folder: str | Path) -> list[dict]:
    """Questions from the eval tool's template (`<subtask>.txt`: image, question, gt) or from the
    official release layout (`<subtask>/questions_answers_YN/*.txt` beside `<subtask>/images/`, or
    `<subtask>/*.txt` beside the images; each txt holds `question<TAB>answer` lines).
    Each: {"subtask", "image", "question", "answer", "image_path" (release layout only)}."""
    folder = Path(folder)
    out = []
    for subtask in SUBTASKS:
        flat, nested = folder / f"{subtask}.txt", folder / subtask
        if flat.is_file():
            for where, fields in _lines(flat):
                if len(fields) < 3:
                    raise InputError(f"{where}: expected image, question, answer separated by tabs")
                out.append(_question(where, subtask, *fields[:3]))
        elif nested.is_dir():
            out += _release_subtask(nested, subtask)
    if not out:
        raise InputError(f"{folder}: no MME questions (neither <subtask>.txt nor <subtask>/ folders)")
    return out


def _release_subtask(folder: Path, subtask: str) -> list[dict]:
    qa = folder / "questions_answers_YN"
    texts, images = (qa, folder / "images") if qa.is_dir() else (folder, folder)
    out = []
    for txt in sorted(texts.glob("*.txt")):
        image = next((p for p in sorted(images.glob(txt.stem + ".*")) if p.suffix.lower() != ".txt"), None)
        if image is None:
            raise InputError(f"{txt}: no image named {txt.stem}.* in {images}")
        for where, fields in _lines(txt):
            if len(fields) < 2:
                raise InputError(f"{where}: expected question<TAB>answer")
            out.append({**_question(where, subtask, image.name, fields[0], fields[1]), "image_path": str(image)})
    return out


def _question(where: str, subtask: str, image: str, question: str, gt: str) -> dict:
    if gt.strip().lower() not in ("yes", "no"):
        raise InputError(f"{where}: ground truth {gt!r} is not yes/no")
    return {"subtask": subtask, "image": image, "question": question, "answer": gt.strip().lower()}


def _lines(path: Path):
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            yield f"{path}:{number}", line.split("\t")


def write_results(folder: str | Path, predictions: list[dict]) -> list[Path]:
    """The eval tool's result files from {"subtask","image","question","answer","response"} dicts,
    in the order given (keep the template's order: the official tool reads lines in pairs)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    by_subtask = defaultdict(list)
    for p in predictions:
        gt = p["answer"].capitalize()
        by_subtask[p["subtask"]].append("\t".join([p["image"], flatten(p["question"]), gt, flatten(p["response"])]))
    paths = []
    for subtask, lines in by_subtask.items():
        path = folder / f"{subtask}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def read_results(folder: str | Path) -> list[dict]:
    """Scored items from a folder of result files (subtasks absent from it are skipped).
    Each: {"id": "subtask/image/k", "subtask", "image", "question", "answer", "response", "pred", "correct"}."""
    folder = Path(folder)
    items, seen = [], defaultdict(int)
    for subtask in SUBTASKS:
        path = folder / f"{subtask}.txt"
        if not path.is_file():
            continue
        for where, fields in _lines(path):
            if len(fields) < 3:
                raise InputError(f"{where}: expected image, question, gt, response separated by tabs")
            item = _question(where, subtask, *fields[:3])
            # the tool would split on a stray tab; we keep the whole tail as the response
            response = "\t".join(fields[3:])
            k = seen[subtask, item["image"]]
            seen[subtask, item["image"]] += 1
            pred = answer(response)
            items.append({"id": f"{subtask}/{item['image']}/{k}", **item, "response": response, "pred": pred,
                          "correct": pred == item["answer"]})
    if not items:
        raise InputError(f"{folder}: no MME result files (<subtask>.txt for {', '.join(SUBTASKS)})")
    return items


# -- scoring -------------------------------------------------------------------------------------

def units(items: list[dict]) -> dict[str, dict[str, list[float]]]:
    """Per subtask, per image: [share of its 2 answers right, both right]. Every image must have 2."""
    groups = defaultdict(list)
    for item in items:
        groups[item["subtask"], item["image"]].append(bool(item["correct"]))
    out = defaultdict(dict)
    for (subtask, image), right in groups.items():
        if len(right) != 2:
            raise InputError(f"MME {subtask}/{image}: {len(right)} questions, the rules need exactly 2")
        out[subtask][image] = [sum(right) / 2, float(all(right))]
    return dict(out)


def headline(means: dict[str, list[float]]) -> dict[str, float]:
    """Totals from each subtask's mean unit vector: mean of the first is acc, of the second acc+.
    Only groups with a subtask present (mini-MME has no cognition: a total of 0 would mislead)."""
    score = {s: 100 * (m[0] + m[1]) for s, m in means.items()}
    return {group: sum(score.get(s, 0.0) for s in subtasks)
            for group, subtasks in (("perception", PERCEPTION), ("cognition", COGNITION))
            if any(s in score for s in subtasks)}


def score(items: list[dict]) -> dict:
    """{"perception", "cognition", "subtasks": {name: {"acc", "acc_plus", "score"}}}, rounded like the
    published tables. Totals sum the subtasks present (a group with none is left out); "other"
    answers are counted too."""
    per = units(items)
    means = {s: [sum(v[i] for v in images.values()) / len(images) for i in (0, 1)] for s, images in per.items()}
    totals = headline(means)
    others = defaultdict(int)
    for item in items:
        others[item["subtask"]] += item["pred"] == "other" if "pred" in item else 0
    return {**{k: round(v, DIGITS) for k, v in totals.items()},
            "subtasks": {s: {"acc": round(100 * means[s][0], DIGITS), "acc_plus": round(100 * means[s][1], DIGITS),
                             "score": round(100 * sum(means[s]), DIGITS), "other": others[s]}
                         for s in SUBTASKS if s in means}}


def correct(item: dict) -> bool:
    """The per-question outcome McNemar's test pairs."""
    return bool(item["correct"])


# -- the run -------------------------------------------------------------------------------------

def mme_score(results_dir: str | Path, out: str | Path | None = None) -> dict:
    """`silkie eval mme-score`: score a folder of MME result files; with `out`, also save the items
    as `<out>/mme/` for `silkie eval compare`."""
    items = read_results(results_dir)
    if out is not None:

        write_scored(out, NAME, items, score)
    return score(items)


def run(spec, data, out, log=print) -> dict:
    """`silkie eval mme`: answer every question of the release at `data` with the pool model `spec`,
    write OUT/mme/results/<subtask>.txt and score them into OUT/mme/ (resumable). Returns the summary."""
    from silkie.eval.runner import PREDICTIONS, data_folder, finish, lazy, predict

    folder, out = data_folder(data), Path(out)
    questions = read_questions(folder)
    if any("image_path" not in q for q in questions):
        raise InputError(f"{folder}: the eval tool's question template has no images; give the release folder "
                         "(<subtask>/ folders of images and question files)")
    seen = defaultdict(int)
    for q in questions:  # ids as read_results gives them, so predictions, items and result lines agree
        q["id"] = f"{q['subtask']}/{q['image']}/{seen[q['subtask'], q['image']]}"
        q["prompt"] = q["question"]
        seen[q["subtask"], q["image"]] += 1
    answers, added = predict(out / NAME / PREDICTIONS, questions, spec.model, spec.adapter, lazy(spec),
                             spec.generation, log=log)
    write_results(out / NAME / RESULTS, [{**q, "response": answers[q["id"]]["response"] or ""} for q in questions])
    errors = {i: a["error"] for i, a in answers.items() if a.get("error")}
    items = [{**it, "error": errors[it["id"]]} if it["id"] in errors else it
             for it in read_results(out / NAME / RESULTS) if it["id"] in answers]  # not a stale subtask
    scores = write_scored(out, NAME, items, score)
    return finish(out, NAME, spec, data, added, questions=len(items), errors=len(errors),
                  **{k: scores[k] for k in ("perception", "cognition") if k in scores})
