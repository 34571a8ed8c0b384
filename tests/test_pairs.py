"""Pair policies on hand-made rows: the official rule exactly, the variants, the baselines, the report."""

import itertools
import math
import random

import numpy as np
import pytest

from silkie import InputError
from silkie.pairs import plan_pairs, row_from_completions
from silkie.schema import ASPECTS


def row(row_id, ratings, lengths=None):
    """ratings: one "HEV" string (or list) per completion, e.g. ["555", "333"]."""
    lengths = lengths or [10] * len(ratings)
    completions = [{"model": f"m{i}", "response": "w " * n,
                    "annotations": {a: {"Rating": str(r), "Rationale": ""} for a, r in zip(ASPECTS, rs)}}
                   for i, (rs, n) in enumerate(zip(ratings, lengths))]
    return row_from_completions(row_id, completions)


def triples(pairs):
    return sorted((p.row, p.chosen, p.rejected) for p in pairs)


def test_silkie_rule_every_pair_ranked_by_mean_ties_dropped():
    rows = [row("a", ["555", "333", "333", "111"])]
    pairs, report = plan_pairs(rows)
    assert triples(pairs) == [(0, 0, 1), (0, 0, 2), (0, 0, 3), (0, 1, 3), (0, 2, 3)]  # (1, 2) tie dropped
    first = next(p for p in pairs if (p.chosen, p.rejected) == (0, 3))
    assert (first.chosen_score, first.rejected_score) == (5.0, 1.0)
    assert report.pairs == 5 and report.wins["m0"] == 3 and report.appearances["m3"] == 3


def test_unweighted_mean_not_single_aspect():
    pairs, _ = plan_pairs([row("a", ["515", "333"])])  # means 11/3 vs 3
    assert triples(pairs) == [(0, 0, 1)] and pairs[0].chosen_score == pytest.approx(11 / 3)


def test_non_numeric_rating_skips_every_pair_it_is_in():
    pairs, report = plan_pairs([row("a", [["N/A", "5", "5"], "333", "111"])])
    assert triples(pairs) == [(0, 1, 2)]
    pairs, report = plan_pairs([row("b", [["N/A", "5", "5"], ["4/5", "4", "4"]])])
    assert pairs == [] and report.rows_without_pairs == {"non-numeric ratings": 1}


def official_pairs(rows, missing_skips=False):
    """The authors' rule (vlf-silkie/VLFeedback run_dpo.py @ e6ddec7), written again from its description:
    every pair of completions, the mean of float(Rating) over the annotation's aspects, ValueError skips,
    ties dropped. `rows` are lists of completions as our rows hold them; `datasets` presents an absent
    aspect as None, so the annotation is seen with every aspect of the features. Where the authors' code
    would crash (TypeError on a missing rating), `missing_skips` skips the pair instead, as we do."""
    found = {}
    with np.errstate(all="ignore"):  # "1e308" overflows and "inf" with "-inf" is NaN, silently as in numpy's mean
        _official_pairs(rows, missing_skips, found)
    return found


def _official_pairs(rows, missing_skips, found):
    for r, completions in enumerate(rows):
        annotations = [{a: (c["annotations"].get(a)) for a in ASPECTS} for c in completions]
        for one, two in itertools.combinations(range(len(annotations)), 2):
            try:
                means = [np.mean([float(annotations[k][a]["Rating"]) for a in annotations[k]]) for k in (one, two)]
            except ValueError:
                continue
            except TypeError:
                if missing_skips:
                    continue
                raise
            if means[0] > means[1]:
                found[(r, one, two)] = (means[0], means[1])
            elif means[1] > means[0]:
                found[(r, two, one)] = (means[1], means[0])


RATINGS = ["1", "2", "3", "4", "5"] * 6 + ["+4", "4.5", "3.0", " 5 ", "10", "0", "-2", "nan", "NaN", "inf", "-inf",
                                            "Infinity", "1e308", "0.1", "1_0", "N/A", "", "4/5", "five"]


def generated_rows(seed, n=600, missing=False):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        completions = []
        for m in range(rng.randint(1, 5)):
            annotations = {}
            for aspect in ASPECTS:
                if missing and rng.random() < 0.05:
                    continue  # the aspect is absent
                rating = None if missing and rng.random() < 0.05 else rng.choice(RATINGS)
                annotations[aspect] = {"Rating": rating, "Rationale": ""}
            completions.append({"model": f"m{m}", "response": "w", "annotations": annotations})
        rows.append(completions)
    return rows


def planned(rows, **kwargs):
    pairs, _ = plan_pairs([row_from_completions(str(i), c, **kwargs) for i, c in enumerate(rows)])
    return {(p.row, p.chosen, p.rejected): (p.chosen_score, p.rejected_score) for p in pairs}


def same_scores(ours, theirs):
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(ours, theirs))


@pytest.mark.parametrize("seed", range(5))
def test_silkie_policy_is_exactly_the_official_rule_on_generated_rows(seed):
    rows = generated_rows(seed)
    ours, theirs = planned(rows), official_pairs(rows)
    assert ours.keys() == theirs.keys() and len(theirs) > 500
    assert all(same_scores(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("seed", range(5))
def test_missing_ratings_and_absent_aspects_skip_the_pair(seed):
    rows = generated_rows(seed, missing=True)
    with pytest.raises(TypeError):
        official_pairs(rows)  # the authors' code cannot read a missing rating at all
    ours, theirs = planned(rows), official_pairs(rows, missing_skips=True)
    assert ours.keys() == theirs.keys() and len(theirs) > 300
    assert all(same_scores(ours[k], theirs[k]) for k in theirs)


def test_float_forms_nan_and_inf_as_python_floats_compare():
    assert triples(plan_pairs([row("a", [["+4", "4.5", "3.0"], "333"])])[0]) == [(0, 0, 1)]
    assert triples(plan_pairs([row("a", [["inf", "1", "1"], "555"])])[0]) == [(0, 0, 1)]
    assert triples(plan_pairs([row("a", [["-inf", "5", "5"], "111"])])[0]) == [(0, 1, 0)]
    pairs, report = plan_pairs([row("a", [["nan", "5", "5"], "111"])])  # a NaN mean never wins: a tie
    assert pairs == [] and report.rows_without_pairs == {"all scores tied": 1}
    pairs, _ = plan_pairs([row("a", [["inf", "-inf", "5"], ["inf", "5", "5"], "111"])])  # NaN; inf beats 1
    assert triples(pairs) == [(0, 1, 2)]
    assert plan_pairs([row("a", [["inf", "5", "5"], ["inf", "1", "1"]])])[0] == []  # inf against inf: a tie
    assert plan_pairs([row("a", [["nan", "5", "5"], "555", "111"])], "maxmin")[0][0].chosen == 1


def test_strict_ratings_keep_the_whole_number_reading():
    completions = [{"model": f"m{i}", "response": "x", "annotations": {a: {"Rating": r} for a in ASPECTS}}
                   for i, r in enumerate(["+4", "4.5", "3.0", "inf", "nan", "2"])]
    assert planned([completions], strict=True) == {}
    assert planned([completions]).keys() == official_pairs([completions]).keys()
    assert len(planned([completions])) == 10  # 15 pairs less the 5 the NaN mean is in
    assert planned([completions + [completions[-1] | {"model": "m6"}]], strict=True) == {}  # 2 vs 2: a tie


def test_out_of_range_counts_as_official_code_did_unless_strict():
    rows = [row("a", [["10", "5", "5"], "555"])]
    pairs, _ = plan_pairs(rows)
    assert triples(pairs) == [(0, 0, 1)]  # 20/3 > 5
    completions = [{"model": "m0", "response": "x", "annotations": {a: {"Rating": r} for a, r in zip(ASPECTS, "X55")}},
                   {"model": "m1", "response": "x", "annotations": {a: {"Rating": "5"} for a in ASPECTS}}]
    completions[0]["annotations"]["Helpfulness"]["Rating"] = "10"
    strict = row_from_completions("a", completions, strict=True)
    assert plan_pairs([strict])[0] == []


def test_margin_maxmin_and_best_vs_random():
    rows = [row("a", ["555", "444", "333", "111"])]
    assert triples(plan_pairs(rows, "margin:2")[0]) == [(0, 0, 2), (0, 0, 3), (0, 1, 3), (0, 2, 3)]
    assert triples(plan_pairs(rows, "maxmin")[0]) == [(0, 0, 3)]
    chosen = {plan_pairs(rows, "best-vs-random", seed=s)[0][0].rejected for s in range(30)}
    assert chosen == {1, 2, 3}  # any strictly worse response, seeded


def test_weights_and_single_aspect():
    rows = [row("a", ["155", "513"])]  # H, E, V
    assert triples(plan_pairs(rows)[0]) == [(0, 0, 1)]  # 11/3 > 3
    assert triples(plan_pairs(rows, weights="H=5")[0]) == [(0, 1, 0)]
    assert triples(plan_pairs(rows, "aspect:Helpfulness")[0]) == [(0, 1, 0)]
    assert triples(plan_pairs(rows, "aspect:V")[0]) == [(0, 0, 1)]


def test_paper_baselines_longest_and_model():
    rows = [row("a", ["555", "111", "333"], lengths=[5, 50, 20])]
    [pair], _ = plan_pairs(rows, "longest")
    assert pair.chosen == 1 and pair.rejected in (0, 2)
    [pair], _ = plan_pairs(rows, "model:m2")
    assert pair.chosen == 2
    pairs, report = plan_pairs(rows, "model:gpt-4v")
    assert pairs == [] and report.rows_without_pairs == {"no response from gpt-4v": 1}


def test_report_length_bias_and_margins():
    rows = [row("a", ["555", "111"], lengths=[40, 10]), row("b", ["111", "111"])]
    _, report = plan_pairs(rows)
    summary = report.summary()
    assert summary["chosen_rejected_length_ratio"] == 4.0 and summary["mean_margin"] == 4.0
    assert summary["rows_without_pairs"] == {"all scores tied": 1}
    assert summary["win_rate"] == {"m0": 1.0, "m1": 0.0}


def test_judge_noise_swaps_the_requested_share():
    rows = [row(f"r{i}", ["555", "111"]) for i in range(2000)]
    pairs, report = plan_pairs(rows, judge_noise=0.25, seed=1)
    swapped = sum(p.chosen == 1 for p in pairs)
    assert swapped == report.swapped and math.isclose(swapped / 2000, 0.25, abs_tol=0.03)


@pytest.mark.parametrize("policy", ["nope", "margin", "margin:x", "aspect:Style", "maxmin:3"])
def test_bad_policies_are_one_line_errors(policy):
    with pytest.raises(InputError):
        plan_pairs([row("a", ["555", "111"])], policy)
    with pytest.raises(InputError, match="unknown aspect"):
        plan_pairs([], weights="Q=2")


def test_rows_over_the_completion_cap_pair_nothing():
    """Every pair of n completions is n(n-1)/2 pairs: 3,000 took 1.7 GB and 15 s to plan; now none."""
    many = row("many", ["555", "111"] * 1500)
    pairs, report = plan_pairs([many, row("a", ["555", "111"])])
    assert triples(pairs) == [(1, 0, 1)] and report.rows_without_pairs == {"more than 16 completions": 1}
    five = [row("five", ["555", "444", "333", "222", "111"])]
    assert plan_pairs(five, max_completions=4)[0] == [] and len(plan_pairs(five, max_completions=5)[0]) == 10


def test_official_split_reproduces_the_authors_train_test_split():
    """split="official": the pairs `datasets`' train_test_split(test_size=0.005, seed=42) holds out of the full
    official pair list (image-less rows included), then the image-less pairs dropped from both splits."""
    from datasets import Dataset

    from silkie.build import plan

    completions = generated_rows(7, n=3000)
    rows = [{"id": f"r{i % 50}", "completions": c, "image": None if i % 17 == 0 else "x.jpg"}
            for i, c in enumerate(completions)]
    listed = list(official_pairs(completions))  # in the authors' order: rows, then combinations
    split = Dataset.from_dict({"key": [list(k) for k in listed]}).train_test_split(test_size=0.005, seed=42)
    usable = {i for i, r in enumerate(rows) if r["image"] is not None}
    expected = {name: {tuple(k) for k in split[name]["key"] if k[0] in usable} for name in ("train", "test")}

    planned_split = plan(iter(rows), split="official")
    got = {"train": set(), "test": set()}
    for index, row_pairs in planned_split.pairs.items():
        for p in row_pairs:
            got[planned_split.split_of(index, p)].add((p.row, p.chosen, p.rejected))
    assert got == expected and len(expected["test"]) >= 10
    assert {k[0] for k in split["test"]["key"]} - usable, "the sample should hold out an image-less pair too"

    by_instruction = plan(iter(rows))  # the default: whole instructions held out
    assert by_instruction.test_pairs is None and by_instruction.split_of(min(by_instruction.test), None) == "test"


def test_unknown_split_is_an_input_error():
    from silkie.build import plan

    with pytest.raises(InputError, match="split"):
        plan(iter([]), split="random")
