"""Pair policies on hand-made rows: the official rule exactly, the variants, the baselines, the report."""

import math

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
