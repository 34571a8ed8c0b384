"""silkie stats: every number checked against a direct count of the rows, figures that open and show
something, unrated responses counted apart from ratings, and a dataset without a `pairs` config."""

import json
import re
from collections import Counter, defaultdict
from statistics import mean

import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageStat

from silkie.cli import main
from silkie.schema import ASPECTS
from silkie.stats import FIGURES, stats


def parquet_rows(folder, config, columns):
    return [row for path in sorted((folder / "data" / config).glob("*.parquet"))
            for row in pq.read_table(path, columns=columns).to_pylist()]


def assert_readable(out, result):
    """Every figure stats.md links exists, opens, has a sensible size and is not blank."""
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (out / "stats.md").read_text())
    assert sorted(links) == sorted(result["figures"].values())
    for link in links:
        image = Image.open(out / link)
        assert 900 <= image.width <= 2600 and 450 <= image.height <= 1600, (link, image.size)
        gray = image.convert("L")
        assert ImageStat.Stat(gray).stddev[0] > 20, f"{link} looks blank"
        assert len(image.convert("RGB").getcolors(1 << 20)) > 20, f"{link} has almost no colours"


def test_numbers_match_a_direct_count_of_the_built_dataset(built_dataset, tmp_path):
    out = tmp_path / "stats"
    result = stats(built_dataset, out)
    assert json.loads((out / "stats.json").read_text()) == result

    # Ratings: shares of 1-5 per aspect and per-model means, counted here straight from the Parquet rows.
    counts, values, overall = {a: Counter() for a in ASPECTS}, defaultdict(list), defaultdict(list)
    for row in parquet_rows(built_dataset, "default", ["completions"]):
        completions = row["completions"]
        for model, annotation in zip(completions["model"], completions["annotations"]):
            ratings = [int(annotation[a]["Rating"]) for a in ASPECTS]  # the scene judge writes only 1-5
            for aspect, rating in zip(ASPECTS, ratings):
                counts[aspect][rating] += 1
                values[model, aspect].append(rating)
            overall[model].append(mean(ratings))
    assert result["rows"] == 40 and result["responses"] == 160
    for aspect in ASPECTS:
        entry = result["aspects"][aspect]
        assert entry["rated"] == 160 and entry["missing"] == entry["invalid"] == 0
        assert entry["counts"] == {str(k): counts[aspect][k] for k in range(1, 6)}
        assert sum(entry["shares"].values()) == pytest.approx(1, abs=1e-3)
        assert entry["shares"]["5"] == pytest.approx(counts[aspect][5] / 160, abs=1e-4)
    for (model, aspect), ratings in values.items():
        assert result["models"][model][aspect] == pytest.approx(mean(ratings), abs=1e-3)
        assert result["models"][model]["overall"] == pytest.approx(mean(overall[model]), abs=1e-3)
    assert result["models"]["m-good"]["overall"] == 5.0

    # Pairs: the `pairs` config itself, counted here.
    pairs = parquet_rows(built_dataset, "pairs", ["chosen_model", "rejected_model", "chosen_score", "rejected_score"])
    wins, seen = Counter(p["chosen_model"] for p in pairs), Counter()
    for p in pairs:
        seen.update([p["chosen_model"], p["rejected_model"]])
    report = result["pairs"]
    assert report["pairs"] == len(pairs) == sum(report["splits"].values())
    assert set(report["splits"]) == {"train", "test"}
    assert report["policy"] == "silkie" and "pairs` config" in report["origin"]
    assert report["wins"] == {m: [wins[m], seen[m]] for m in seen}
    margins = [p["chosen_score"] - p["rejected_score"] for p in pairs]
    assert min(margins) > 0 and report["mean_margin"] == pytest.approx(mean(margins), abs=1e-3)
    assert sum(report["margin_histogram_thirds"]["counts"]) == len(pairs)
    assert result["policies"]["silkie"]["pairs"] == len(pairs)  # planning again gives what the builder wrote
    assert result["policies"]["maxmin"]["pairs"] == 40  # one per row: no row has all scores tied
    assert set(result["figures"]) == set(FIGURES)
    assert_readable(out, result)
    markdown = (out / "stats.md").read_text()
    assert "| m-good | 40 | 5.0 | 5.0 | 5.0 | 5.0 |" in markdown and f"| `silkie` | {len(pairs)} |" in markdown


def write_default_only(folder):
    """A `default`-only dataset (like the Hub release) with missing, empty, non-numeric and out-of-range
    ratings and one completion whose annotations were skipped altogether."""
    import datasets

    from silkie.schema import DEFAULT_FEATURES, completion_columns

    def completion(model, ratings, words=5):
        annotations = None if ratings is None else {
            a: {"Rating": r, "Rationale": "because"} for a, r in zip(ASPECTS, ratings)}
        return {"annotations": annotations, "model": model, "response": "word " * words}

    rows = [
        [completion("m1", ["5", "5", "5"]), completion("m2", [None, "4", "3"]), completion("m3", ["N/A", "", "10"])],
        [completion("m1", ["4", "4", "4"], 9), completion("m2", ["2", "2", "2"], 3), completion("m3", None)],
    ]
    records = [{"id": f"r{i}", "prompt": "Describe the image.", "models": [c["model"] for c in row],
                "completions": completion_columns(row), "image": None, "source": "hand"} for i, row in enumerate(rows)]
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_list(records, features=DEFAULT_FEATURES).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet"))
    return folder


def test_unrated_responses_are_counted_apart_and_pairs_are_planned_without_a_pairs_config(tmp_path):
    dataset = write_default_only(tmp_path / "hand")
    result = stats(dataset, tmp_path / "out")
    aspects = result["aspects"]
    assert aspects["Helpfulness"]["counts"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}
    assert (aspects["Helpfulness"]["missing"], aspects["Helpfulness"]["invalid"]) == (2, 1)  # None + skipped; N/A
    assert (aspects["Ethical Considerations"]["rated"], aspects["Ethical Considerations"]["missing"]) == (4, 2)
    assert (aspects["Visual Faithfulness"]["invalid"], aspects["Visual Faithfulness"]["missing"]) == (1, 1)  # "10"
    assert aspects["Helpfulness"]["shares"]["5"] == pytest.approx(1 / 3, abs=1e-4)  # of rated responses only
    assert aspects["Helpfulness"]["mean"] == pytest.approx(11 / 3, abs=1e-3)
    models = result["models"]
    assert models["m1"] == {"responses": 2, "Helpfulness": 4.5, "Ethical Considerations": 4.5,
                            "Visual Faithfulness": 4.5, "overall": 4.5}
    assert models["m2"]["Helpfulness"] == 2.0 and models["m2"]["Visual Faithfulness"] == 2.5
    assert models["m2"]["overall"] == 2.0  # only its fully rated response counts
    assert models["m3"] == {"responses": 2, **dict.fromkeys((*ASPECTS, "overall"))}

    # No `pairs` config: the silkie policy planned on the ratings; row r0 has one numeric response only.
    report = result["pairs"]
    assert result["configs"] == ["default"] and report["splits"] is None and "no `pairs` config" in report["origin"]
    assert report["pairs"] == 1 and report["wins"] == {"m1": [1, 1], "m2": [0, 1]}
    assert report["rows_without_pairs"] == {"non-numeric ratings": 1}
    assert report["chosen_rejected_length_ratio"] == 3.0  # 9 words over 3
    assert result["policies"]["longest"]["pairs"] == 1  # r0: all three answers have 5 words
    assert_readable(tmp_path / "out", result)
    markdown = (tmp_path / "out" / "stats.md").read_text()
    assert "| Helpfulness | 0.0% | 33.3% | 0.0% | 33.3% | 33.3% | 3.667 | 3 | 2 | 1 |" in markdown
    assert "| m3 | 2 | – | – | – | – |" in markdown


def test_cli_writes_the_report_and_refuses_a_missing_dataset(built_dataset, tmp_path, capsys):
    assert main(["stats", "--dataset", str(built_dataset), "--out", str(tmp_path / "s")]) == 0
    printed = capsys.readouterr().out
    assert "40 rows, 160 responses" in printed and "stats.md" in printed
    assert (tmp_path / "s" / "score_distribution.png").is_file()
    assert main(["stats", "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "t")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no such dataset folder" in error
    (tmp_path / "empty").mkdir()
    assert main(["stats", "--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "t")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_card_stats_and_judge_report_count_ratings_alike(tmp_path):
    """One annotations set with a missing aspect, an empty rating, "4/5" and "10": the dataset card, stats.json
    and the judge report all show the same counts, missing and invalid apart (the rule of silkie/ratings.py)."""
    import io
    import zipfile

    from silkie.build import build
    from silkie.feedback.report import write_judge_report

    def cells(ratings):  # None: the aspect is absent
        return {a: {"Rating": r, "Rationale": "because"} for a, r in zip(ASPECTS, ratings) if r is not None}

    rated = {"r0": [("m1", "5 5 5"), ("m2", "4/5 4 3"), ("m3", "2 - 1"), ("m4", "3 3 3")],
             "r1": [("m1", "4 4 4"), ("m2", "2 2 ''"), ("m3", "10 5 5"), ("m4", "5 - 5")]}
    release, annotations = tmp_path / "release.jsonl", tmp_path / "annotations.jsonl"
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="JPEG")
    with open(release, "w") as rows, open(annotations, "w") as judged, zipfile.ZipFile(tmp_path / "i.zip", "w") as z:
        for row_id, responses in rated.items():
            completions = [{"annotations": cells([{"-": None, "''": ""}.get(r, r) for r in written.split()]),
                            "model": m, "response": "An answer."} for m, written in responses]
            rows.write(json.dumps({"id": row_id, "prompt": "Describe.", "completions": completions}) + "\n")
            judged.write(json.dumps({"id": row_id, "models": [m for m, _ in responses],
                                     "annotations": [c["annotations"] for c in completions], "error": None,
                                     "judge": {"name": "hand", "prompt_version": "v1", "order": [0, 1, 2, 3]}}) + "\n")
            z.writestr(f"merged_images/{row_id}.jpg", buffer.getvalue())
    built, _, _ = build(tmp_path / "built", release=release, images=tmp_path / "i.zip")
    result = stats(built, tmp_path / "stats")
    write_judge_report(annotations, tmp_path / "judge_report.md")

    expected = {"Helpfulness": ({"1": 0, "2": 2, "3": 1, "4": 1, "5": 2}, 0, 2),  # "4/5" and "10" invalid
                "Ethical Considerations": ({"1": 0, "2": 1, "3": 1, "4": 2, "5": 2}, 2, 0),  # two aspects absent
                "Visual Faithfulness": ({"1": 1, "2": 0, "3": 2, "4": 1, "5": 3}, 1, 0)}  # "" is missing
    card_summary = json.loads((built / "ratings.json").read_text())
    judge = json.loads((tmp_path / "judge_report.json").read_text())
    for summary in (card_summary, judge["ratings"], json.loads((tmp_path / "stats" / "ratings.json").read_text())):
        assert summary == card_summary
    card, judge_md = (built / "README.md").read_text(), (tmp_path / "judge_report.md").read_text()
    for aspect, (counts, missing, invalid) in expected.items():
        entry = result["aspects"][aspect]
        assert (entry["counts"], entry["missing"], entry["invalid"]) == (counts, missing, invalid), aspect
        assert card_summary["aspects"][aspect] == entry
        shares = " | ".join(f"{100 * n / sum(counts.values()):.1f}%" for n in counts.values())
        assert f"| {aspect} | {shares} | {missing} | {invalid} |" in card, aspect
        assert f"| {aspect} | {' | '.join(map(str, counts.values()))} | {missing} | {invalid} |" in judge_md, aspect
    assert result["models"]["m2"]["Helpfulness"] == 2.0 and result["models"]["m2"]["overall"] is None  # none whole
    assert result["models"]["m1"]["overall"] == 4.5
    assert "| m2 | 2 | 2.00 | 3.00 | 3.00 |" in judge_md and "| m2 | 2.0 | 3.0 | 3.0 |" in card


def test_a_float_form_rating_is_invalid_as_a_rating_and_counted_in_pairs():
    """One name everywhere for "4.5": not a 1-5 rating (invalid), yet a number the pair rule reads."""
    from silkie.ratings import summarize

    ratings = ["4.5", "+4", "10", "nan", "N/A", "4/5", "", None, "4", " 5 "]
    cells = [{aspect: {"Rating": r, "Rationale": "."} for aspect in ASPECTS} for r in ratings]
    summary = summarize(("m", c) for c in cells)
    helpful = summary["aspects"]["Helpfulness"]
    assert (helpful["rated"], helpful["missing"], helpful["invalid"], helpful["in_pairs"]) == (2, 2, 6, 4)
    assert summary["models"]["m"]["aspects"]["Visual Faithfulness"]["in_pairs"] == 4
