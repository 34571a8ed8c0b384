"""Preference pairs from rated completions: the policies, and the report of what they produced.

The default policy, `silkie`, is the official rule of the VLFeedback release, as the authors'
training script computes it (vlf-silkie/VLFeedback, run_dpo.py, commit e6ddec70175d5f78f2644fd77c99343a2ed2dfa6,
`make_vlfeedback_paired_dataset`), rewritten here from what it does:

- every unordered pair of a row's completions is considered;
- a completion's score is `np.mean` of `float(Rating)` over its annotation's aspects (read through
  `datasets`, so the three aspects of the release's features, in their declared order);
- a pair where either score raises ValueError in `float` (e.g. "N/A", "4/5", "") is skipped;
- the higher score is chosen; equal scores are dropped, and so is any comparison involving a NaN
  mean, since neither `a > b` nor `b > a` holds then.

So "+4", "4.5", "3.0", " 5 " and "10" count; "nan", "inf" and "-inf" parse and compare as Python
floats do ("inf" beats any finite mean, inf against inf is a tie, "inf" with "-inf" averages to NaN).
A missing rating (None, or an aspect absent from the annotation) makes the official script fail
(`float(None)` and `None["Rating"]` raise TypeError, not ValueError); we skip the pair instead, the
same as a non-numeric rating. `strict=True` reads only whole numbers on the 1-5 scale
(`schema.rating_value`) and skips every other pair, as this toolkit did before.

Planning works on ratings only, vectorised with numpy, so 80K rows plan in seconds; the texts
and images are joined in when the pairs are written (silkie/build.py).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from silkie import InputError
from silkie.dataset import MAX_COMPLETIONS
from silkie.schema import ASPECTS, official_value, rating_value, raw_rating

POLICIES = ("silkie", "margin:X", "maxmin", "best-vs-random", "aspect:NAME", "longest", "model:NAME")
ASPECT_KEYS = {"H": "Helpfulness", "E": "Ethical Considerations", "V": "Visual Faithfulness"}


@dataclass
class RatedRow:
    """What pairing needs from one `default` row."""
    id: str
    models: list[str]
    ratings: np.ndarray  # (completions, 3) in ASPECTS order, NaN where not usable (or written "nan")
    lengths: list[int]  # response lengths in words
    usable: bool = True  # False when the row cannot feed pairs at all (e.g. its image is missing)
    parsed: np.ndarray | None = None  # (completions, 3): the rating was read; None means "not NaN"

    def __post_init__(self):
        if self.parsed is None:
            self.parsed = ~np.isnan(self.ratings)


def row_from_completions(row_id: str, completions: list[dict], strict: bool = False, usable: bool = True) -> RatedRow:
    """completions: [{"annotations": {aspect: {"Rating": ..}}, "model": .., "response": ..}, ...]"""
    values = np.full((len(completions), len(ASPECTS)), np.nan)
    parsed = np.zeros(values.shape, dtype=bool)
    for i, completion in enumerate(completions):
        for j, aspect in enumerate(ASPECTS):
            raw = raw_rating(completion, aspect)
            if strict:
                whole = rating_value(raw)
                value = None if whole is None else float(whole)
            else:
                value = official_value(raw)
            if value is not None:
                values[i, j], parsed[i, j] = value, True
    return RatedRow(row_id, [str(c.get("model")) for c in completions], values,
                    [len((c.get("response") or "").split()) for c in completions], usable, parsed)


@dataclass
class Pair:
    row: int  # index of the row in the planned sequence
    chosen: int  # completion indices within the row
    rejected: int
    chosen_score: float
    rejected_score: float


@dataclass
class PairReport:
    policy: str
    rows: int = 0
    pairs: int = 0
    rows_without_pairs: Counter = field(default_factory=Counter)  # reason -> rows
    margins: list[float] = field(default_factory=list)
    length_ratios: list[float] = field(default_factory=list)  # chosen words / rejected words
    wins: Counter = field(default_factory=Counter)  # model -> times chosen
    appearances: Counter = field(default_factory=Counter)  # model -> times in a pair
    swapped: int = 0  # pairs flipped on purpose (judge_noise)

    def summary(self) -> dict:
        hist, edges = np.histogram(self.margins, bins=[0, 0.5, 1, 1.5, 2, 3, 4.01]) if self.margins else ([], [])
        return {
            "policy": self.policy, "rows": self.rows, "pairs": self.pairs,
            "rows_without_pairs": dict(self.rows_without_pairs),
            "margin_histogram": {f"{edges[i]:g}-{edges[i + 1]:g}": int(n) for i, n in enumerate(hist)},
            "mean_margin": round(float(np.mean(self.margins)), 3) if self.margins else None,
            "chosen_rejected_length_ratio": round(float(np.median(self.length_ratios)), 3)
            if self.length_ratios else None,
            "win_rate": {m: round(self.wins[m] / n, 3) for m, n in sorted(self.appearances.items())},
            "swapped": self.swapped,
        }


def parse_weights(text: str | None) -> np.ndarray:
    """"H=1,V=2,E=1" -> weights in ASPECTS order (unlisted aspects weigh 1)."""
    weights = dict.fromkeys(ASPECTS, 1.0)
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        aspect = ASPECT_KEYS.get(key.strip().upper(), key.strip())
        if aspect not in weights:
            raise InputError(f"--weights: unknown aspect {key!r}; use H, E, V or a full aspect name")
        try:
            weights[aspect] = float(value)
        except ValueError:
            raise InputError(f"--weights: {part!r} needs a number after '='") from None
    return np.array([weights[a] for a in ASPECTS])


def parse_policy(policy: str) -> tuple[str, str | None]:
    """A pair-policy string as (name, argument), or an InputError saying what is wrong with it."""
    name, _, argument = policy.partition(":")
    if name in ("margin", "aspect", "model"):
        if not argument:
            raise InputError(f"pair policy {policy!r} needs an argument, e.g. {name}:" +
                             {"margin": "1.0", "aspect": "Helpfulness", "model": "gpt-4o"}[name])
        if name == "aspect" and argument not in ASPECTS and argument.upper() not in ASPECT_KEYS:
            raise InputError(f"pair policy {policy!r}: unknown aspect (known: {', '.join(ASPECTS)})")
        if name == "margin":
            try:
                float(argument)
            except ValueError:
                raise InputError(f"pair policy {policy!r}: the margin must be a number") from None
    elif name not in ("silkie", "maxmin", "best-vs-random", "longest") or argument:
        raise InputError(f"unknown pair policy {policy!r} (known: {', '.join(POLICIES)})")
    return name, argument or None


def plan_pairs(rows, policy: str = "silkie", weights: str | None = None, seed: int = 0,
               judge_noise: float = 0.0, max_completions: int = MAX_COMPLETIONS) -> tuple[list[Pair], PairReport]:
    """The pairs a policy takes from rows (an iterable of RatedRow), and a report of what it did.

    `judge_noise` swaps chosen and rejected in that share of pairs (seeded): a way to measure
    how much judge error the training recipe tolerates. A row with more than `max_completions`
    completions pairs nothing (every pair of n completions is n(n-1)/2 of them: 400 made 64,000 pairs
    a row), so no row yields more than max_completions*(max_completions-1)/2 pairs.
    """
    name, argument = parse_policy(policy)
    weight = parse_weights(weights)
    if name == "aspect":
        weight = np.array([float(a == ASPECT_KEYS.get(argument.upper(), argument)) for a in ASPECTS])
    rng = random.Random(seed)
    pairs, report = [], PairReport(policy)
    for index, row in enumerate(rows):
        report.rows += 1
        if len(row.models) > max_completions:
            found, reason = [], f"more than {max_completions} completions"
        else:
            found, reason = _row_pairs(row, name, argument, weight, rng)
        if not found:
            report.rows_without_pairs[reason] += 1
        for chosen, rejected, high, low in found:
            if judge_noise and rng.random() < judge_noise:
                chosen, rejected, high, low = rejected, chosen, low, high
                report.swapped += 1
            pairs.append(Pair(index, chosen, rejected, high, low))
            report.pairs += 1
            if np.isfinite(high - low):  # heuristic policies may pair unrated responses
                report.margins.append(abs(high - low))
            report.length_ratios.append(row.lengths[chosen] / max(row.lengths[rejected], 1))
            report.wins[row.models[chosen]] += 1
            report.appearances[row.models[chosen]] += 1
            report.appearances[row.models[rejected]] += 1
    return pairs, report


def _row_pairs(row: RatedRow, name: str, argument: str | None, weight: np.ndarray, rng: random.Random):
    """[(chosen, rejected, chosen_score, rejected_score)] for one row, or ([], why not)."""
    if not row.usable:
        return [], "row unusable (image missing or corrupt)"
    if len(row.models) < 2:
        return [], "fewer than 2 completions"
    used = weight > 0
    valid = row.parsed[:, used].all(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):  # "inf" with "-inf" means NaN, as in the official code
        if used.all() and (weight == weight[0]).all():
            scores = np.mean(row.ratings, axis=1)  # the official mean, summed in the same order
        else:
            scores = row.ratings[:, used] @ weight[used] / weight[used].sum()
    scores = np.where(valid, scores, np.nan)
    n = len(row.models)
    if name in ("silkie", "margin"):
        threshold = float(argument) if name == "margin" else 0.0
        i, j = np.triu_indices(n, k=1)
        with np.errstate(invalid="ignore"):  # inf - inf: a tie, as in the official comparison
            keep = valid[i] & valid[j] & ((scores[i] > scores[j]) | (scores[j] > scores[i]))
            keep &= ~(np.abs(scores[i] - scores[j]) < threshold)
        if not keep.any():
            return [], _why_none(valid, scores)
        out = []
        for a, b in zip(i[keep], j[keep]):
            hi, lo = (a, b) if scores[a] > scores[b] else (b, a)
            out.append((int(hi), int(lo), float(scores[hi]), float(scores[lo])))
        return out, None
    if name == "longest":
        best = max(range(n), key=lambda k: (row.lengths[k], -k))
        others = [k for k in range(n) if row.lengths[k] < row.lengths[best]]
        if not others:
            return [], "all responses the same length"
        other = rng.choice(others)
        return [(best, other, float(scores[best]), float(scores[other]))], None
    if name == "model":
        if argument not in row.models:
            return [], f"no response from {argument}"
        best = row.models.index(argument)
        other = rng.choice([k for k in range(n) if k != best])
        return [(best, other, float(scores[best]), float(scores[other]))], None
    rankable = valid & ~np.isnan(scores)  # a NaN mean ranks against nothing
    ranked = [k for k in np.argsort(-np.where(rankable, scores, -np.inf), kind="stable") if rankable[k]]
    if len(ranked) < 2 or scores[ranked[0]] == scores[ranked[-1]]:
        return [], _why_none(valid, scores)
    best = ranked[0]
    if name == "maxmin":
        other = ranked[-1]
    else:  # best-vs-random: any strictly worse response
        other = rng.choice([k for k in ranked if scores[k] < scores[best]])
    return [(int(best), int(other), float(scores[best]), float(scores[other]))], None


def _why_none(valid: np.ndarray, scores: np.ndarray) -> str:
    if valid.sum() < 2:
        return "non-numeric ratings" if (~valid).any() else "fewer than 2 completions"
    comparable = scores[valid & ~np.isnan(scores)]
    if len(comparable) < 2 or (comparable == comparable[0]).all():
        return "all scores tied"  # a NaN mean ties with everything
    return "no pair wide enough"
