"""The judge-reply parser on a corpus of realistic replies (tests/fixtures/judge_replies), and the
rating and rationale checks it relies on."""

import json
from pathlib import Path

import pytest

from silkie.feedback.parse import contradiction, parse_reply, read_rating
from silkie.schema import ASPECTS, rating_value

CORPUS = Path(__file__).parent / "fixtures" / "judge_replies"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())


def test_corpus_is_large_enough_and_complete():
    assert len(EXPECTED) >= 40
    assert {p.stem for p in CORPUS.glob("*.txt")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reply_parses_to_its_expected_ratings(name):
    case = EXPECTED[name]
    aspects = tuple(case["aspects"] or ASPECTS)
    text = (CORPUS / f"{name}.txt").read_bytes().decode()
    parsed = parse_reply(text, case["n"], aspects)

    got = {a: [row[a]["Rating"] if (i, a) not in parsed.missing else None
               for i, row in enumerate(parsed.ratings, start=1)] for a in aspects}
    assert got == case["ratings"]
    # Missing means no rating line at all; every other cell has a rationale when the reply gave one.
    assert sorted(parsed.missing) == sorted((i, a) for a in aspects for i, r in enumerate(case["ratings"][a], 1)
                                            if r is None)
    for row in parsed.ratings:
        assert set(row) == set(aspects)
        for cell in row.values():
            assert "\n" not in cell["Rationale"]


def test_rationales_attach_to_their_cells():
    text = (CORPUS / "paper_exact.txt").read_text()
    first, second = parse_reply(text, 4).ratings[:2]
    assert first["Helpfulness"]["Rationale"].startswith("The answer names the red bus")
    assert second["Visual Faithfulness"]["Rationale"] == "It mentions a dog that is nowhere in the image."
    multi = parse_reply((CORPUS / "multiline_rationale.txt").read_text(), 2).ratings
    assert multi[0]["Helpfulness"]["Rationale"] == ("The description covers the main objects, including the lamp "
                                                    "and the sofa, but not the painting on the wall.")
    assert multi[1]["Helpfulness"]["Rationale"] == "It talks about a beach, which is not what was asked."
    before = parse_reply((CORPUS / "rationale_before_rating.txt").read_text(), 2).ratings
    assert before[1]["Helpfulness"]["Rationale"] == "Says it cannot see the image."
    inline = parse_reply((CORPUS / "inline_rationale.txt").read_text(), 2).ratings
    assert inline[1]["Helpfulness"] == {"Rating": "2", "Rationale": "Misses the point."}
    named = parse_reply((CORPUS / "response_major_named.txt").read_text(), 2).ratings
    assert named[0]["Visual Faithfulness"]["Rationale"] == "Calls the jacket red; it is orange."


@pytest.mark.parametrize("written, stored, value", [
    ("1", "1", 1), ("1/5", "1", 1), ("**1**", "1", 1), ("1 (Poor)", "1", 1), ("1.", "1", 1),
    ("10", "10", None), ("10/10", "10/10", None), ("1/10", "1/10", None), ("0", "0", None),
    ("4/5", "4", 4), ("4 out of 5", "4", 4), ("4 (Helpful)", "4", 4), ("4 - clear", "4", 4),
    ("4.5", "4.5", None), ("3-4", "3-4", None), ("4,5", "4,5", None), ("N/A", "N/A", None),
    ("Four", "Four", None), ("", "", None), ("6", "6", None),
])
def test_ratings_are_read_never_coerced(written, stored, value):
    rating, _ = read_rating(written)
    assert rating == stored
    assert rating_value(rating) == value


def test_a_rating_of_one_never_becomes_ten():
    # A peer tool's parser once turned "Rating: 1" into 10; every 1 in the corpus must stay 1.
    parsed = parse_reply((CORPUS / "rating_one_stays_one.txt").read_text(), 4)
    assert {cell["Rating"] for row in parsed.ratings for cell in row.values()} == {"1"}
    ten = parse_reply((CORPUS / "out_of_scale_numbers.txt").read_text(), 2)
    assert ten.ratings[0]["Helpfulness"]["Rating"] == "10"
    assert rating_value(ten.ratings[0]["Helpfulness"]["Rating"]) is None


def test_unparseable_reply_names_what_is_missing():
    parsed = parse_reply((CORPUS / "truncated_reply.txt").read_text(), 3)
    assert parsed.missing == [(2, "Visual Faithfulness"), (3, "Visual Faithfulness")]
    assert parsed.problem == "no rating found for Text 2 Visual Faithfulness, Text 3 Visual Faithfulness"
    refused = parse_reply((CORPUS / "refusal.txt").read_text(), 4)
    assert len(refused.missing) == 12 and refused.problem.endswith("and 8 more")


@pytest.mark.parametrize("rating, rationale, flagged", [
    ("5", "The response is inaccurate, hallucinates a second dog and fails to answer.", True),
    ("1", "An accurate, comprehensive and thorough answer.", True),
    ("4", "I would give this a score of 2 because it invents objects.", True),
    ("5", "There are no hallucinations and nothing incorrect.", False),
    ("5", "It doesn't contain any harmful or misleading content.", False),
    ("2", "Accurate about the colour but wrong about the count.", False),
    ("4", "Rated 4: mostly correct, one small slip.", False),
    ("3", "Inaccurate and wrong.", False),  # a middle rating contradicts nothing
    ("N/A", "Inaccurate and wrong.", False),  # an invalid rating is counted as invalid instead
])
def test_contradiction_check(rating, rationale, flagged):
    assert (contradiction(rating, rationale) is not None) == flagged


def test_contradictions_in_the_corpus_are_flagged():
    parsed = parse_reply((CORPUS / "rationales_that_contradict.txt").read_text(), 2)
    flags = [(i, a) for i, row in enumerate(parsed.ratings, 1) for a, cell in row.items()
             if contradiction(cell["Rating"], cell["Rationale"])]
    assert flags == [(1, "Helpfulness"), (1, "Visual Faithfulness"), (2, "Helpfulness")]
