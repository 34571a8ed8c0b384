"""RUN/judge_report.md: how far the judge can be trusted, computed from the annotation records alone.

Parse failures (replies re-asked, records left unreadable), invalid ratings and rationales that
contradict their rating by aspect, position consistency from the swap check and the mean rating
at each shown position, and the rating distribution per aspect and per model.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from silkie.feedback.parse import contradiction
from silkie.schema import ASPECTS, RATING_SCALE, rating_value

EXAMPLES = 10


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _mean(values: list[int]) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "n/a"


def judge_report(annotations: str | Path, summary=None) -> str:
    """The report as Markdown; `summary` (an AnnotateSummary) adds what the last run did."""
    from silkie.io import read_jsonl

    c: Counter = Counter()
    judges: Counter = Counter()
    errors: Counter = Counter()
    invalid, flagged = Counter(), Counter()
    examples: list[str] = []
    by_aspect = {a: Counter() for a in ASPECTS}
    by_model: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
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
            reason = record["error"].split(":")[0]
            errors[reason] += 1
            continue
        c["judged"] += 1
        c["responses"] += len(record["models"])
        for model, cells in zip(record["models"], record["annotations"]):
            for aspect in ASPECTS:
                rating, rationale = cells[aspect]["Rating"], cells[aspect]["Rationale"]
                value = rating_value(rating)
                by_aspect[aspect][value if value is not None else "invalid"] += 1
                if value is None:
                    invalid[aspect] += 1
                    continue
                by_model[model][aspect].append(value)
                why = contradiction(rating, rationale)
                if why:
                    flagged[aspect] += 1
                    if len(examples) < EXAMPLES:
                        examples.append(f"- `{record['id']}` {model}, {aspect}: {why}: \"{rationale[:120]}\"")
        for shown, index in enumerate(judge.get("order") or []):
            if index < len(record["annotations"]):
                cells = record["annotations"][index]
                by_position[shown + 1] += [v for a in ASPECTS if (v := rating_value(cells[a]["Rating"])) is not None]
        swap = judge.get("swap")
        if swap:
            c["swapped"] += 1
            for cells, again in zip(record["annotations"], swap["ratings"]):
                for aspect in ASPECTS:
                    first, second = rating_value(cells[aspect]["Rating"]), rating_value(again.get(aspect))
                    if first is not None and second is not None:
                        swap_cells[aspect] += 1
                        swap_same[aspect] += first == second
                        swap_diff[aspect] += abs(first - second)

    lines = ["# Judge report", "", f"From `{Path(annotations).name}`: {c['records']} records, {c['judged']} judged "
             f"({c['responses']} responses), {c['errors']} with errors.", ""]
    lines += [f"- Judge: {name}: {count} records" for name, count in judges.most_common()]
    lines += ["", "## Parsing", "",
              f"- Replies that could not be read and were asked again: {c['reasked']} of {c['records']} records "
              f"({_share(c['reasked'], c['records'])})",
              f"- Records with an error: {c['errors']} ({_share(c['errors'], c['records'])})"]
    lines += [f"  - {reason}: {count}" for reason, count in errors.most_common(8)]
    cells = c["responses"]
    lines += ["", "## Invalid ratings and contradicting rationales", "",
              "A rating is invalid when it is not a whole number from 1 to 5 (kept as written, never coerced). "
              "A rationale is flagged when it names another score or only finds fault with a high rating "
              "(or only praises a low one): a heuristic, for review.", "",
              "| aspect | invalid | flagged rationales |", "|---|---|---|"]
    lines += [f"| {a} | {invalid[a]} ({_share(invalid[a], cells)}) | {flagged[a]} ({_share(flagged[a], cells)}) |"
              for a in ASPECTS]
    if examples:
        lines += ["", "Flagged, first few:", *examples]
    lines += ["", "## Position bias", ""]
    if c["swapped"]:
        total = sum(swap_cells.values())
        lines += [f"{c['swapped']} items judged twice, the second time with the order reversed. "
                  f"Ratings unchanged: {_share(sum(swap_same.values()), total)}.", "",
                  "| aspect | unchanged | mean absolute change |", "|---|---|---|"]
        lines += [f"| {a} | {_share(swap_same[a], swap_cells[a])} | "
                  f"{swap_diff[a] / swap_cells[a]:.2f} |" if swap_cells[a] else f"| {a} | n/a | n/a |" for a in ASPECTS]
    else:
        lines += ["No swap check in these records (`--swap-check F` judges a share F again in reverse order)."]
    if by_position:
        lines += ["", "Mean rating by the position a response was shown in (the order is shuffled, so a "
                  "judge without position preference gives equal means):", "",
                  "| " + " | ".join(f"Text {p}" for p in sorted(by_position)) + " |",
                  "|" + "---|" * len(by_position),
                  "| " + " | ".join(_mean(by_position[p]) for p in sorted(by_position)) + " |"]
    scale = " | ".join(map(str, RATING_SCALE))
    lines += ["", "## Ratings by aspect", "", f"| aspect | {scale} | invalid | mean |",
              "|---|" + "---|" * (len(RATING_SCALE) + 2)]
    for aspect in ASPECTS:
        counts = by_aspect[aspect]
        values = [v for v in RATING_SCALE for _ in range(counts[v])]
        lines.append(f"| {aspect} | " + " | ".join(str(counts[v]) for v in RATING_SCALE)
                     + f" | {counts['invalid']} | {_mean(values)} |")
    lines += ["", "## Mean rating by model", "", "| model | responses | " + " | ".join(ASPECTS) + " |",
              "|---|---|" + "---|" * len(ASPECTS)]
    for model in sorted(by_model):
        ratings = by_model[model]
        lines.append(f"| {model} | {max(len(v) for v in ratings.values())} | "
                     + " | ".join(_mean(ratings[a]) for a in ASPECTS) + " |")
    if summary is not None:
        lines += ["", "## Last run", "", "```", summary.table(), "```"]
    return "\n".join(lines) + "\n"


def write_report(annotations: str | Path, out: str | Path, summary=None) -> Path:
    out = Path(out)
    out.write_text(judge_report(annotations, summary))
    return out
