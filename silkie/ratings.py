"""The rating summary: one count of a set of ratings, which every published table reads.

The dataset card, `silkie stats`, the judge report and the run report all show numbers from
`summarize` (or `RatingSummary.add`, for a caller already streaming rows), written as JSON by `write`,
so they cannot disagree about what a rating is. The one rule, per response and aspect:

- *valid*: a whole number from 1 to 5, as `schema.rating_value` reads it (" 4 " is 4);
- *missing*: nothing was written — the response has no annotations, the aspect is absent, or its
  rating is null or blank. A built `default` config stores an absent rating as "", so the same
  ratings count the same before and after a build;
- *invalid*: something was written that is not a whole number from 1 to 5 ("4/5", "N/A", "10", "0").
  Those of them that are numbers to Python's `float` ("4.5", "+4", "3.0", "10", "nan") are still read
  by the `silkie` pair rule, as by the authors' code; `in_pairs` counts them, so the card, `stats`
  and the judge report all call a float-form rating the same thing: invalid as a rating, counted in
  pairs.

Missing and invalid ratings are counted apart and never as ratings: shares and means are over valid
ratings only. A model's `overall` is the mean, over its responses valid on every aspect, of their
unweighted mean rating (the score the `silkie` pair policy ranks by).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from silkie.schema import ASPECTS, RATING_SCALE, official_value, rating_value

MISSING, INVALID, IN_PAIRS = "missing", "invalid", "in_pairs"
SCALE = tuple(str(v) for v in RATING_SCALE)


def classify(raw) -> int | str:
    """A raw rating as the rule reads it: its value 1-5, MISSING or INVALID."""
    value = rating_value(raw)
    if value is not None:
        return value
    return MISSING if raw is None or not str(raw).strip() else INVALID


def _tally(counter: Counter) -> dict:
    """Counts, shares of valid ratings, mean, and the unrated counts of one aspect (or model x aspect)."""
    rated = sum(counter[v] for v in RATING_SCALE)
    return {"counts": {str(v): counter[v] for v in RATING_SCALE},
            "shares": {str(v): round(counter[v] / rated, 4) if rated else 0.0 for v in RATING_SCALE},
            "mean": round(sum(v * counter[v] for v in RATING_SCALE) / rated, 3) if rated else None,
            "rated": rated, MISSING: counter[MISSING], INVALID: counter[INVALID], IN_PAIRS: counter[IN_PAIRS]}


class RatingSummary:
    """Counts per aspect and per model x aspect; `to_json` derives every share and mean from them."""

    def __init__(self):
        self.models: dict[str, dict[str, Counter]] = {}  # model -> aspect -> Counter of classify()
        self.responses: Counter = Counter()  # model -> responses
        self.overall: dict[str, list[float]] = {}  # model -> [sum of response means, responses fully rated]

    def add(self, model: str, annotations: dict | None) -> None:
        """One response: `annotations` is {aspect: {"Rating": ..., ...}}, or None when it was not rated."""
        model = str(model)
        per_aspect = self.models.setdefault(model, {a: Counter() for a in ASPECTS})
        self.responses[model] += 1
        values = []
        for aspect in ASPECTS:
            entry = (annotations or {}).get(aspect)
            raw = entry.get("Rating") if isinstance(entry, dict) else None
            kind = classify(raw)
            per_aspect[aspect][kind] += 1
            if kind == INVALID and official_value(raw) is not None:
                per_aspect[aspect][IN_PAIRS] += 1  # invalid as a rating, yet a number the pair rule reads
            values.append(kind)
        total = self.overall.setdefault(model, [0.0, 0])
        if all(isinstance(v, int) for v in values):
            total[0] += sum(values) / len(values)
            total[1] += 1

    def to_json(self) -> dict:
        aspects = {a: sum((per[a] for per in self.models.values()), Counter()) for a in ASPECTS}
        models = {}
        for model in sorted(self.models):
            total, rated = self.overall[model]
            models[model] = {"responses": self.responses[model],
                             "overall": round(total / rated, 3) if rated else None,
                             "aspects": {a: _tally(self.models[model][a]) for a in ASPECTS}}
        return {"responses": sum(self.responses.values()),
                "aspects": {a: _tally(c) for a, c in aspects.items()}, "models": models}


def summarize(responses: Iterable[tuple[str, dict | None]]) -> dict:
    """The summary (as `to_json`) of (model, annotations) pairs, one per response."""
    summary = RatingSummary()
    for model, cells in responses:
        summary.add(model, cells)
    return summary.to_json()


def write(summary: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return path


def load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def means(summary: dict) -> dict:
    """{model: {aspect: mean, ..., "overall": mean}}: the per-model table every report shows."""
    return {m: {**{a: v["aspects"][a]["mean"] for a in ASPECTS}, "overall": v["overall"]}
            for m, v in summary["models"].items()}
