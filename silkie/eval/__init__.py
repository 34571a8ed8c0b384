"""Evaluation: one module per benchmark behind one small interface, plus a paired comparison.

A benchmark module has NAME and pure functions over its scored items (dicts with a unique "id"):
  score(items) -> dict          the benchmark's report (what scores.json holds)
  units(items) -> {stratum: {unit: [floats]}}   the resampling units (MME: images within subtasks)
  headline(means) -> {metric: value}   the headline metrics from each stratum's mean unit vector
  correct: item -> bool, or None   the paired binary outcome McNemar's test reads, if there is one
so `score`'s headline figures and the bootstrap in compare.py are the same computation.

A benchmark module that answers a real release also has `run(spec, data, out, [judge,] log)` (see
runner.py for what runs share), and a module may carry NOTE, a line every comparison report prints.

A model's evaluation folder holds, per benchmark, `<benchmark>/items.jsonl` (one scored item a line)
and `<benchmark>/scores.json` (score(items)). A folder of a benchmark without a module here is
compared generically: items with "correct" (bool) give "accuracy", items with "score" (number)
give "score".
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from silkie import InputError
from silkie.eval import mme, mmhal, mmvet, redteam

BENCHMARKS = {m.NAME: m for m in (mme, mmhal, mmvet, redteam)}
ITEMS, SCORES = "items.jsonl", "scores.json"


def _generic(name: str, items: list[dict]):
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


def benchmark(name: str, items: list[dict] | None = None):
    """The module scoring `name` (or a generic one built from the items' fields)."""
    return BENCHMARKS.get(name) or _generic(name, items or [])


def save(folder: str | Path, name: str, items: list[dict]) -> dict:
    """Write `<folder>/<name>/items.jsonl` and `scores.json`; returns the scores."""
    out = Path(folder) / name
    out.mkdir(parents=True, exist_ok=True)
    ids = [str(it["id"]) for it in items]
    if len(set(ids)) != len(ids):
        raise InputError(f"{name}: item ids are not unique")
    with open(out / ITEMS, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    scores = benchmark(name, items).score(items)
    (out / SCORES).write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def load(folder: str | Path, name: str) -> list[dict]:
    """The scored items of one benchmark in a model's evaluation folder."""
    path = Path(folder) / name / ITEMS
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{number}: not JSON ({e.msg})") from None
    return items


def mme_score(results_dir: str | Path, out: str | Path | None = None) -> dict:
    """`silkie eval mme-score`: score a folder of MME result files; with `out`, also save the items
    as `<out>/mme/` for `silkie eval compare`."""
    items = mme.read_results(results_dir)
    if out is not None:
        save(out, mme.NAME, items)
    return mme.score(items)
