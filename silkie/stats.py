"""Figures and tables of a VLFeedback-format dataset: `silkie stats --dataset DIR|HUB_ID --out DIR`.

Three reports, as in the Silkie paper plus the pair report:
- the share of each rating (1-5) per aspect (the paper's left figure);
- the mean rating of each model per aspect and overall (its right figure);
- the preference pairs: pairs per policy, score margins, chosen/rejected length ratio, win rate by model.

Only text columns are read (images never are), through `datasets` in streaming mode, so a Hub id and a
built folder take the same path and nothing is cached. The ratings are counted by `silkie/ratings.py`
(written as ratings.json), whose rule the card and the judge report share: a rating that is not a whole
number from 1 to 5 is never counted as one, but as `missing` (nothing written) or `invalid` (written but
unreadable, e.g. "N/A" or "10"), both shown beside the shares.

Pairs: the pair statistics come from `silkie/pairs.py`. When the dataset has a `pairs` config, its
rows are what the report describes; without one (e.g. the Hub release), the report describes the pairs
the `silkie` policy would make from the ratings, and says so. Either way, "pairs per policy" plans each
policy of `POLICIES` on the ratings (images are not checked there, so a row whose image is unusable still
counts). Writes stats.json, stats.md, ratings.json and the PNG figures into the output folder.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from silkie import InputError, one_line
from silkie.ratings import SCALE
from silkie.schema import ASPECTS

POLICIES = ("silkie", "margin:1", "maxmin", "best-vs-random", "longest")
FIGURES = {"score_distribution": "score_distribution.png", "model_comparison": "model_comparison.png",
           "pair_margins": "pair_margins.png", "win_rate": "win_rate.png"}
RATINGS = SCALE  # "1".."5", the keys of the summary's counts and shares
RATING_COLORS = ("#d7191c", "#fdae61", "#fee08b", "#a6d96a", "#1a9641")  # ColorBrewer RdYlGn: bad red, good green
ASPECT_COLORS = {"Helpfulness": "#4c72b0", "Ethical Considerations": "#55a868", "Visual Faithfulness": "#dd8452",
                 "overall": "#555555"}


__all__ = ["compute", "draw", "markdown", "run", "stats"]


def run(run_dir: str | Path, log=print) -> dict:
    """The stage: figures and tables of RUN/vlfeedback into RUN/stats/; returns the ledger's summary."""
    from silkie.layout import RunLayout

    layout = RunLayout(run_dir)
    return stats(layout.dataset, layout.stats)["summary"]


def stats(dataset: str | Path, out: str | Path, policies=POLICIES) -> dict:
    """Read a dataset (a built folder or a Hub id, `ID@REVISION` allowed), write stats.json, stats.md and
    the figures into `out`, and return what stats.json holds."""
    from silkie.ratings import write

    result = compute(dataset, policies)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write(result.pop("ratings"), out / "ratings.json")  # stats.json shows its aspects and means
    result["figures"] = draw(result, out)
    result["summary"] = {"rows": result["rows"], "responses": result["responses"], "models": len(result["models"]),
                         "pairs": result["pairs"]["pairs"],
                         "pairs_from": "pairs config" if result["pairs"]["splits"] is not None else "planned",
                         "files": ["stats.json", "stats.md", "ratings.json", *result["figures"].values()]}
    (out / "stats.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    (out / "stats.md").write_text(markdown(result))
    return result


# ---- reading ------------------------------------------------------------------------------------

def _streams(dataset: str | Path, config: str, columns: list[str]) -> dict:
    """{split: IterableDataset} of one config, reading only `columns` where the format allows it."""
    import datasets

    source, revision = _source(dataset)
    try:
        builder = datasets.load_dataset_builder(source, config, revision=revision)
        features = builder.info.features
        if features is not None:
            columns = [c for c in columns if c in features]
            if hasattr(builder.config, "columns"):  # Parquet: skip the image bytes entirely
                builder = datasets.load_dataset_builder(source, config, revision=revision, columns=columns)
        return builder.as_streaming_dataset()
    except (OSError, ValueError, RuntimeError) as error:
        raise InputError(f"cannot read the {config!r} config of {dataset}: {one_line(error)[:300]}") from None


def _source(dataset: str | Path) -> tuple[str, str | None]:
    """A local folder as is; a Hub id with an optional @revision (ids cannot hold '@')."""
    if Path(dataset).exists():
        return str(dataset), None
    text = str(dataset)
    if text.startswith((".", "/", "~")) or (text.count("/") > 1 and "@" not in text):
        raise InputError(f"no such dataset folder: {text}")
    name, _, revision = text.partition("@")
    return name, revision or None


def _configs(dataset: str | Path) -> list[str]:
    import datasets

    source, revision = _source(dataset)
    try:
        return datasets.get_dataset_config_names(source, revision=revision)
    except (OSError, ValueError, RuntimeError) as error:
        hint = ""
        if "scripts are no longer supported" in str(error) and not Path(source).exists() and not revision:
            # the release's main branch has a loading script; the Hub converts such datasets to Parquet
            hint = f"; try {source}@refs/convert/parquet, the Hub's Parquet export"
        raise InputError(f"cannot read dataset {dataset}: {one_line(error)[:300]}{hint}") from None


def _float(value) -> float:
    return math.nan if value is None else float(value)


def _words(messages) -> int:
    """Words in a chat turn list's text parts (the `chosen`/`rejected` format of `pairs`)."""
    return sum(len((part.get("text") or "").split()) for turn in messages or [] for part in turn.get("content") or [])


def compute(dataset: str | Path, policies=POLICIES):
    """The numbers of stats.json (figures aside), plus `ratings`: the rating summary its rating tables
    come from, which `stats` writes apart as ratings.json."""
    from tqdm.auto import tqdm

    from silkie.dataset import completions_list
    from silkie.pairs import PairReport, plan_pairs, row_from_completions
    from silkie.ratings import RatingSummary, means

    configs = _configs(dataset)
    if "default" not in configs:
        raise InputError(f"{dataset} has no 'default' config (found: {', '.join(configs) or 'none'})")
    ratings, sources, rows = RatingSummary(), Counter(), []
    for split, stream in _streams(dataset, "default", ["id", "completions", "source"]).items():
        for row in tqdm(stream, desc=f"reading default/{split}", unit=" rows", disable=None):  # shown on a terminal
            if row.get("source"):
                sources[row["source"]] += 1
            completions = completions_list(row.get("completions") or [])
            rows.append(row_from_completions(str(row.get("id")), completions))
            for completion in completions:
                ratings.add(completion.get("model"), completion.get("annotations"))

    summary = ratings.to_json()
    result = {"dataset": str(dataset), "configs": configs, "rows": len(rows), "responses": summary["responses"],
              "sources": dict(sources.most_common()), "aspects": summary["aspects"],
              "models": {m: {"responses": summary["models"][m]["responses"], **per}
                         for m, per in means(summary).items()},
              "ratings": summary}

    built_policy = _built_policy(dataset)
    result["policies"], planned = {}, {}
    for policy in dict.fromkeys([*policies, *([built_policy] if built_policy else [])]):
        try:
            planned[policy] = plan_pairs(rows, policy)[1]
        except InputError:
            continue  # a policy the card names but this version of pairs.py does not know
        summary = planned[policy].summary()
        result["policies"][policy] = {k: summary[k] for k in ("pairs", "rows_without_pairs", "mean_margin")}

    if "pairs" in configs:
        report, extra = PairReport(built_policy or "unknown"), {"splits": {}, "chosen_below_rejected": 0}
        ids = set()
        columns = ["id", "chosen", "rejected", "chosen_model", "rejected_model", "chosen_score", "rejected_score"]
        for split, stream in _streams(dataset, "pairs", columns).items():
            extra["splits"][split] = 0
            for pair in tqdm(stream, desc=f"reading pairs/{split}", unit=" pairs", disable=None):
                extra["splits"][split] += 1
                ids.add(pair.get("id"))
                report.pairs += 1
                margin = _float(pair.get("chosen_score")) - _float(pair.get("rejected_score"))
                if math.isfinite(margin):  # as pairs.py: heuristic policies may pair unrated responses
                    report.margins.append(abs(margin))
                    extra["chosen_below_rejected"] += margin < 0  # judge noise, or a heuristic policy
                report.length_ratios.append(_words(pair.get("chosen")) / max(_words(pair.get("rejected")), 1))
                report.wins[pair.get("chosen_model")] += 1
                report.appearances[pair.get("chosen_model")] += 1
                report.appearances[pair.get("rejected_model")] += 1
        report.rows = extra["instructions"] = len(ids)  # rows without pairs are not in the config
        origin = "the dataset's `pairs` config"
    else:
        report = planned.get("silkie") or plan_pairs(rows, "silkie")[1]
        extra = {"splits": None, "chosen_below_rejected": 0,
                 "instructions": report.rows - sum(report.rows_without_pairs.values())}
        origin = ("planned from the ratings by silkie/pairs.py with the `silkie` policy "
                  "(the dataset has no `pairs` config)")
    ratios = report.length_ratios
    result["pairs"] = {"origin": origin, **report.summary(), **extra, **_histograms(report),
                       "wins": {m: [report.wins[m], n] for m, n in sorted(report.appearances.items())},
                       "chosen_longer_share": round(sum(r > 1 for r in ratios) / len(ratios), 3) if ratios else None}
    return result


def _histograms(report) -> dict:
    """The pair figures' histograms. Scores are means of 3 whole ratings, so margins fall on thirds: one bin
    per third. Length ratios on a log2 scale, clipped to 1/16..16."""
    import numpy as np

    margins = np.asarray(report.margins)
    top = max(4.0, float(margins.max()) if margins.size else 0.0)
    edges = np.concatenate([[0.0], np.arange(1, math.ceil(top * 3) + 2) / 3 - 1 / 6])
    ratios = np.log2(np.clip(np.asarray(report.length_ratios), 1 / 16, 16))
    bins = np.arange(-4.25, 4.5, 0.5)
    return {"margin_histogram_thirds": {"edges": [round(e, 4) for e in edges.tolist()],
                                        "counts": np.histogram(margins, bins=edges)[0].tolist()},
            "length_ratio_histogram_log2": {"edges": bins.tolist(),
                                            "counts": np.histogram(ratios, bins=bins)[0].tolist()}}


def _built_policy(dataset) -> str | None:
    """The pair policy a dataset built by this toolkit records in card_stats.json (local folders only)."""
    path = Path(dataset) / "card_stats.json"
    try:
        return json.loads(path.read_text())["pairs"]["policy"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- figures ------------------------------------------------------------------------------------

def draw(result: dict, out: Path) -> dict:
    """Write the PNG figures; returns {figure: file name}. Uses matplotlib's object API (no pyplot, no
    global backend), which renders with Agg."""
    import matplotlib

    style = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "figure.titlesize": 14,
             "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 150}
    with matplotlib.rc_context(style):
        figures = {"score_distribution": _rating_figure(result), "model_comparison": _model_figure(result)}
        if result["pairs"]["pairs"]:
            figures["pair_margins"] = _margin_figure(result)
            figures["win_rate"] = _win_figure(result)
        written = {}
        for name, figure in figures.items():
            if figure is not None:
                figure.savefig(out / FIGURES[name], metadata={"Software": None})  # same data, same bytes
                written[name] = FIGURES[name]
    for name in set(FIGURES) - set(written):
        (out / FIGURES[name]).unlink(missing_ok=True)  # a stale figure from an earlier run would mislead
    return written


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _rating_figure(result: dict):
    figure = _figure(9, 1.6 + 0.8 * len(ASPECTS))
    ax = figure.add_subplot()
    labels = []
    for y, aspect in enumerate(ASPECTS):
        entry, left = result["aspects"][aspect], 0.0
        for rating, color in zip(RATINGS, RATING_COLORS):
            share = 100 * entry["shares"][rating]
            ax.barh(y, share, left=left, height=0.65, color=color, edgecolor="white", label=rating if y == 0 else None)
            if share >= 5:
                ax.text(left + share / 2, y, f"{share:.0f}%", ha="center", va="center", fontsize=10,
                        color="white" if rating in ("1", "5") else "black")
            left += share
        unrated = ", ".join(f"{entry[k]} {k}" for k in ("missing", "invalid") if entry[k])
        labels.append(f"{aspect}\n{entry['rated']} rated" + (f" ({unrated})" if unrated else ""))
    ax.set_yticks(range(len(ASPECTS)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("Share of rated responses (%)")
    ax.legend(title="Rating", ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.suptitle(f"Rating distribution per aspect ({result['responses']} responses)")
    return figure


def _model_figure(result: dict):
    models = sorted(result["models"], key=lambda m: -(result["models"][m]["overall"] or 0))
    if not models:
        return None
    import numpy as np

    keys = (*ASPECTS, "overall")
    width = 0.8 / len(keys)
    figure = _figure(max(8.0, 0.8 * len(models) + 3), 5)
    ax = figure.add_subplot()
    for i, key in enumerate(keys):
        values = [result["models"][m][key] for m in models]
        bars = ax.bar(np.arange(len(models)) + (i - (len(keys) - 1) / 2) * width,
                      [math.nan if v is None else v for v in values], width * 0.95,
                      color=ASPECT_COLORS[key], label=key[0].upper() + key[1:])
        if len(models) <= 6:  # beyond that the labels collide; the numbers are in stats.md
            ax.bar_label(bars, labels=["" if v is None else f"{v:.2f}" for v in values], fontsize=8, padding=2)
    long_names = max(len(m) for m in models) > 10
    ax.set_xticks(range(len(models)), models, rotation=25 if long_names else 0, ha="right" if long_names else "center")
    for x, model in enumerate(models):
        if result["models"][model]["overall"] is None and all(result["models"][model][a] is None for a in ASPECTS):
            ax.text(x, 0.1, "no valid\nratings", ha="center", va="bottom", fontsize=9, color="grey")
    ax.set_xlim(-0.6, len(models) - 0.4)
    ax.set_ylim(0, 5.5)
    ax.set_yticks(range(6))
    ax.set_ylabel("Mean rating (1–5)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    figure.suptitle("Mean rating per model (sorted by overall)")
    return figure


def _margin_figure(result: dict):
    import numpy as np

    figure = _figure(11, 4.3)
    left, right = figure.subplots(1, 2)
    edges, counts = result["pairs"]["margin_histogram_thirds"].values()
    edges, top = np.asarray(edges), math.floor(edges[-1])
    left.bar((edges[:-1] + edges[1:]) / 2, counts, width=np.diff(edges) * 0.9, color="#4c72b0")
    left.set_xticks(range(math.ceil(top) + 1))
    left.set_xlabel("Score margin, chosen − rejected (rating points)")
    left.set_ylabel("Pairs")
    left.set_title(f"Margins (mean {result['pairs']['mean_margin']})")
    bins, counts_r = result["pairs"]["length_ratio_histogram_log2"].values()
    bins = np.asarray(bins)
    right.bar((bins[:-1] + bins[1:]) / 2, counts_r, width=0.45, color="#dd8452")
    right.set_xticks(range(-4, 5, 2), ["≤1/16", "1/4", "1", "4", "≥16"])
    median = result["pairs"]["chosen_rejected_length_ratio"]
    if median:
        right.axvline(math.log2(median), color="black", linestyle="--", linewidth=1.2, label=f"median {median:g}×")
        right.legend(frameon=False, loc="upper right")
    right.set_xlabel("Length ratio, chosen / rejected (words, log scale)")
    right.set_ylabel("Pairs")
    right.set_title("Length bias (above 1: the longer answer wins)")
    figure.suptitle(f"Preference pairs: {result['pairs']['pairs']} ({_origin_short(result)})")
    return figure


def _win_figure(result: dict):
    wins = result["pairs"]["wins"]
    models = sorted(wins, key=lambda m: wins[m][0] / wins[m][1])
    figure = _figure(8, max(3.0, 1.5 + 0.45 * len(models)))
    ax = figure.add_subplot()
    rates = [100 * wins[m][0] / wins[m][1] for m in models]
    ax.barh(range(len(models)), rates, height=0.65, color="#4c72b0")
    for y, (model, rate) in enumerate(zip(models, rates)):
        ax.text(rate + 1.5, y, f"{rate:.0f}%  ({wins[model][0]}/{wins[model][1]})", va="center", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})  # hides the 50% line behind it
    ax.axvline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(models)), models)
    ax.set_xlim(0, 125)  # room for the labels right of a 100% bar
    ax.spines["bottom"].set_bounds(0, 100)
    ax.set_xticks(range(0, 101, 25))
    ax.set_xlabel("Chosen when in a pair (%)")
    figure.suptitle(f"Win rate by model ({_origin_short(result)})")
    return figure


def _origin_short(result: dict) -> str:
    pairs = result["pairs"]
    return f"pairs config, policy {pairs['policy']}" if pairs["splits"] is not None else "planned, policy silkie"


# ---- markdown -----------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join("–" if v is None else str(v) for v in row) + " |" for row in rows])


def _percent(share) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def markdown(result: dict, figures: str = ".", level: int = 1) -> str:
    """stats.md. To embed it elsewhere: `figures` is the figures' folder relative to where the text will
    live, `level` the depth of its title (a run report embeds it with figures="stats", level=3)."""
    h1, h2 = "#" * level, "#" * (level + 1)
    def image(name, alt):
        prefix = "" if figures in ("", ".") else figures.rstrip("/") + "/"
        return f"![{alt}]({prefix}{result['figures'][name]})" if name in result["figures"] else ""

    sources = ", ".join(f"{s} ({n})" for s, n in result["sources"].items())
    lines = [f"{h1} Dataset statistics: {result['dataset']}", "",
             f"{result['rows']} instructions, {result['responses']} responses from {len(result['models'])} models"
             + (f"; sources: {sources}" if sources else "") + ".", "", f"{h2} Ratings per aspect", "",
             "Share of each rating among rated responses. *missing*: no rating (unrated or skipped); "
             "*invalid*: written but not a whole number from 1 to 5. Neither counts as a rating; an invalid "
             "one that is still a number (\"4.5\", \"10\") is read by the pair rule (`in_pairs` in ratings.json).", ""]
    lines.append(_table(["aspect", *RATINGS, "mean", "rated", "missing", "invalid"], [
        [aspect, *(f"{100 * a['shares'][k]:.1f}%" for k in RATINGS), a["mean"], a["rated"], a["missing"], a["invalid"]]
        for aspect, a in result["aspects"].items()]))
    lines += ["", image("score_distribution", "Rating distribution per aspect"), "", f"{h2} Mean rating per model", "",
              "*overall*: the mean, over a model's responses rated on all three aspects, of their unweighted "
              "mean rating (the score the `silkie` pair policy ranks by).", ""]
    models = sorted(result["models"].items(), key=lambda item: -(item[1]["overall"] or 0))
    lines.append(_table(["model", "responses", *ASPECTS, "overall"],
                        [[m, v["responses"], *(v[k] for k in (*ASPECTS, "overall"))] for m, v in models]))
    lines += ["", image("model_comparison", "Mean rating per model"), "", f"{h2} Preference pairs", ""]
    pairs = result["pairs"]
    lines += ["Pairs each policy makes from the ratings (planned by silkie/pairs.py; images not checked):", "",
              _table(["policy", "pairs", "mean margin", "rows without pairs"],
                     [[f"`{p}`", v["pairs"], v["mean_margin"],
                       ", ".join(f"{why}: {n}" for why, n in v["rows_without_pairs"].items()) or "0"]
                      for p, v in result["policies"].items()]), ""]
    splits = ", ".join(f"{n} {s}" for s, n in (pairs["splits"] or {}).items())
    plural = "" if pairs["pairs"] == 1 else "s"
    lines += [f"The pairs below are {pairs['origin']}: {pairs['pairs']} pair{plural} from {pairs['instructions']} "
              "instructions"
              + (f" ({splits})" if splits else "") + (f", policy `{pairs['policy']}`" if pairs["splits"] else "")
              + ".", "",
              f"- Mean score margin: {pairs['mean_margin']}"
              + (f"; in {pairs['chosen_below_rejected']} pairs the chosen response scored lower"
                 if pairs["chosen_below_rejected"] else "") + ".",
              f"- Chosen/rejected length ratio (words): median {pairs['chosen_rejected_length_ratio']} "
              f"(above 1: longer answers win more often); the chosen response is the longer one in "
              f"{_percent(pairs['chosen_longer_share'])} of pairs.", ""]
    if pairs["wins"]:
        ranked = sorted(pairs["wins"].items(), key=lambda item: -item[1][0] / item[1][1])
        lines += [_table(["model", "chosen", "in pairs", "win rate"],
                         [[m, w, n, f"{100 * w / n:.1f}%"] for m, (w, n) in ranked]), ""]
    lines += [image("pair_margins", "Pair margins and length ratio"), "", image("win_rate", "Win rate by model"), ""]
    return "\n".join(lines).replace("\n\n\n", "\n\n").rstrip("\n") + "\n"
