"""RUN/judge_report.md and .json: how far the judge can be trusted, computed from the annotation records alone.

Parse failures (replies re-asked, records left unreadable), invalid ratings and rationales that
contradict their rating by aspect, position consistency from the swap check and the mean rating
at each shown position, and the rating distribution per aspect and per model (the rating summary of
`silkie/ratings.py`, so missing and invalid ratings are counted as everywhere else).

`figures` computes everything once; the JSON holds it and the Markdown is drawn from it by `sections`,
which the run report (silkie/report.py) also uses, so neither reads the other's Markdown.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from silkie.feedback.parse import contradiction
from silkie.ratings import RatingSummary, classify
from silkie.schema import ASPECTS, RATING_SCALE

EXAMPLES = 10


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _mean(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _cell(cells: dict, aspect: str) -> dict:
    entry = (cells or {}).get(aspect)
    return entry if isinstance(entry, dict) else {}


def _value(rating) -> int | None:
    """A valid rating's value by the summary's rule, else None."""
    kind = classify(rating)
    return kind if isinstance(kind, int) else None


def figures(annotations: str | Path) -> dict:
    """Every number of the report, JSON-ready."""
    from silkie.io import read_jsonl

    c: Counter = Counter()
    judges, errors, flagged = Counter(), Counter(), Counter()
    examples: list[str] = []
    ratings = RatingSummary()
    by_position: dict[int, list[int]] = defaultdict(list)
    swap_cells, swap_same, swap_diff = Counter(), Counter(), Counter()
    for _, record in read_jsonl(annotations):
        if not isinstance(record, dict) or not isinstance(record.get("judge"), dict):
            continue
        c["records"] += 1
        judge = record["judge"]
        judges[f"{judge.get('name')} (prompt {judge.get('prompt_version')})"] += 1
        c["reasked"] += bool(judge.get("reasks"))
        if record.get("error"):
            c["errors"] += 1
            errors[record["error"].split(":")[0]] += 1
            continue
        c["judged"] += 1
        c["responses"] += len(record["models"])
        for model, cells in zip(record["models"], record["annotations"]):
            ratings.add(model, cells)
            for aspect in ASPECTS:
                rating, rationale = _cell(cells, aspect).get("Rating"), _cell(cells, aspect).get("Rationale") or ""
                why = contradiction(rating, rationale) if _value(rating) is not None else None
                if why:
                    flagged[aspect] += 1
                    if len(examples) < EXAMPLES:
                        examples.append(f"`{record['id']}` {model}, {aspect}: {why}: \"{rationale[:120]}\"")
        for shown, index in enumerate(judge.get("order") or []):
            if index < len(record["annotations"]):
                cells = record["annotations"][index]
                values = (_value(_cell(cells, a).get("Rating")) for a in ASPECTS)
                by_position[shown + 1] += [v for v in values if v is not None]
        swap = judge.get("swap")
        if swap:
            c["swapped"] += 1
            for cells, again in zip(record["annotations"], swap["ratings"]):
                for aspect in ASPECTS:
                    first, second = _value(_cell(cells, aspect).get("Rating")), _value(again.get(aspect))
                    if first is not None and second is not None:
                        swap_cells[aspect] += 1
                        swap_same[aspect] += first == second
                        swap_diff[aspect] += abs(first - second)
    return {
        "annotations": Path(annotations).name, **{k: c[k] for k in ("records", "judged", "responses", "errors")},
        "judges": dict(judges.most_common()),
        "parsing": {"reasked": c["reasked"], "errors": c["errors"], "error_reasons": dict(errors.most_common())},
        "flagged_rationales": {a: flagged[a] for a in ASPECTS}, "flagged_examples": examples,
        "position_bias": {
            "swapped": c["swapped"],
            "aspects": {a: {"compared": swap_cells[a], "unchanged": swap_same[a],
                            "mean_absolute_change": round(swap_diff[a] / swap_cells[a], 4) if swap_cells[a] else None}
                        for a in ASPECTS},
            "mean_by_position": {str(p): round(sum(v) / len(v), 4) if v else None
                                 for p, v in sorted(by_position.items())}},
        "ratings": ratings.to_json()}


def sections(report: dict) -> dict[str, str]:
    """{heading: Markdown body} of each `##` section, drawn from `figures`."""
    records, cells, ratings = report["records"], report["responses"], report["ratings"]
    parsing = report["parsing"]
    out = {"Parsing": "\n".join(
        [f"- Replies that could not be read and were asked again: {parsing['reasked']} of {records} records "
         f"({_share(parsing['reasked'], records)})",
         f"- Records with an error: {parsing['errors']} ({_share(parsing['errors'], records)})"]
        + [f"  - {reason}: {n}" for reason, n in list(parsing["error_reasons"].items())[:8]])}
    flagged = report["flagged_rationales"]
    lines = ["A rating is invalid when something is written that is not a whole number from 1 to 5 (kept as "
             "written, never coerced; one that is still a number, such as 4.5 or 10, is read by the pair rule: "
             "`in_pairs` in judge_report.json); missing when nothing is. A rationale is flagged when it names another "
             "score or only finds fault with a high rating (or only praises a low one): a heuristic, for review.", "",
             "| aspect | invalid | flagged rationales |", "|---|---|---|"]
    for a in ASPECTS:
        invalid = ratings["aspects"][a]["invalid"]
        lines.append(f"| {a} | {invalid} ({_share(invalid, cells)}) | {flagged[a]} ({_share(flagged[a], cells)}) |")
    if report["flagged_examples"]:
        lines += ["", "Flagged, first few:", *(f"- {e}" for e in report["flagged_examples"])]
    out["Invalid ratings and contradicting rationales"] = "\n".join(lines)
    out["Position bias"] = _position_bias(report["position_bias"])
    scale = " | ".join(map(str, RATING_SCALE))
    lines = [f"| aspect | {scale} | missing | invalid | mean |", "|---|" + "---|" * (len(RATING_SCALE) + 3)]
    for a, entry in ratings["aspects"].items():
        lines.append(f"| {a} | " + " | ".join(str(n) for n in entry["counts"].values())
                     + f" | {entry['missing']} | {entry['invalid']} | {_mean(entry['mean'])} |")
    out["Ratings by aspect"] = "\n".join(lines)
    lines = ["| model | responses | " + " | ".join(ASPECTS) + " |", "|---|---|" + "---|" * len(ASPECTS)]
    for model, entry in ratings["models"].items():
        lines.append(f"| {model} | {entry['responses']} | "
                     + " | ".join(_mean(entry["aspects"][a]["mean"]) for a in ASPECTS) + " |")
    out["Mean rating by model"] = "\n".join(lines)
    return out


def _position_bias(bias: dict) -> str:
    if bias["swapped"]:
        compared = sum(e["compared"] for e in bias["aspects"].values())
        unchanged = sum(e["unchanged"] for e in bias["aspects"].values())
        lines = [f"{bias['swapped']} items judged twice, the second time with the order reversed. "
                 f"Ratings unchanged: {_share(unchanged, compared)}.", "",
                 "| aspect | unchanged | mean absolute change |", "|---|---|---|"]
        lines += [f"| {a} | {_share(e['unchanged'], e['compared'])} | {e['mean_absolute_change']:.2f} |"
                  if e["compared"] else f"| {a} | n/a | n/a |" for a, e in bias["aspects"].items()]
    else:
        lines = ["No swap check in these records (`--swap-check F` judges a share F again in reverse order)."]
    means = bias["mean_by_position"]
    if means:
        lines += ["", "Mean rating by the position a response was shown in (the order is shuffled, so a "
                  "judge without position preference gives equal means):", "",
                  "| " + " | ".join(f"Text {p}" for p in means) + " |", "|" + "---|" * len(means),
                  "| " + " | ".join(_mean(m) for m in means.values()) + " |"]
    return "\n".join(lines)


def markdown(report: dict, summary=None) -> str:
    """The report as Markdown; `summary` (an AnnotateSummary) adds what the last run did."""
    lines = ["# Judge report", "", f"From `{report['annotations']}`: {report['records']} records, {report['judged']} "
             f"judged ({report['responses']} responses), {report['errors']} with errors.", ""]
    lines += [f"- Judge: {name}: {count} records" for name, count in report["judges"].items()]
    for heading, body in sections(report).items():
        lines += ["", f"## {heading}", "", body]
    if summary is not None:
        lines += ["", "## Last run", "", "```", summary.table(), "```"]
    return "\n".join(lines) + "\n"


def judge_report(annotations: str | Path, summary=None) -> str:
    return markdown(figures(annotations), summary)


def write_judge_report(annotations: str | Path, out: str | Path, summary=None) -> Path:
    """Write `out` (Markdown) and the same figures as JSON beside it (judge_report.json)."""
    out = Path(out)
    report = figures(annotations)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    out.write_text(markdown(report, summary))
    return out
