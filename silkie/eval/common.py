"""The layout of a model's evaluation folder, shared by every benchmark module: per benchmark,
`<benchmark>/items.jsonl` (one scored item a line, unique ids) and `<benchmark>/scores.json`.

Benchmark modules write through `write_scored` with their own `score`; the lookup of a module by name
(`silkie.eval.benchmark`) sits above them in registry.py, so nothing here imports a benchmark and no
benchmark imports the package that lists it.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from silkie import InputError

ITEMS, SCORES = "items.jsonl", "scores.json"


def write_scored(folder: str | Path, name: str, items: list[dict], score) -> dict:
    """Write `<folder>/<name>/items.jsonl` and `scores.json` (`score(items)`); returns the scores."""
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    ids = [str(it["id"]) for it in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"{name}: item ids are not unique")
    with open(out / ITEMS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    scores = score(items)
    (out / SCORES).write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def load(folder: str | Path, name: str) -> list[dict]:
    """The scored items of one benchmark in a model's evaluation folder."""
    from silkie.io import RecordError, read_jsonl

    items = []
    for _, item in read_jsonl(Path(folder) / name / ITEMS):  # bounded lines and nesting, file:line named
        if isinstance(item, RecordError):
            raise item
        items.append(item)
    return items


def generic(name: str, items: list[dict]):
    """A benchmark module for a folder no module here scores: items with "correct" (bool) give
    "accuracy", items with "score" (a number) give "score"."""
    key = "correct" if items and "correct" in items[0] else "score"
    metric = "accuracy" if key == "correct" else "score"

    def units(items):
        return {"": {str(it["id"]): [float(it[key])] for it in items}}

    def headline(means):
        return {metric: means[""][0]}

    def score(items):
        return {metric: round(sum(float(it[key]) for it in items) / len(items), 4) if items else 0.0,
                "n": len(items)}
    return SimpleNamespace(NAME=name, units=units, headline=headline, score=score,
                           correct=(lambda it: bool(it["correct"])) if key == "correct" else None)
