"""RUN/report.md: one page on what a `silkie run` did and what it showed.

Built only from the JSON files the stages left in the run folder (the ledger, judge_report.json with
its rating summary, the dataset's build and pair reports, the training metrics, the comparisons, the
stats), so it can be rebuilt at any time and never says more than the files do. It reads no Markdown:
the judge sections are drawn from judge_report.json by the judge report's own `sections`.
"""

from __future__ import annotations

import json
from pathlib import Path

from silkie.eval.compare import markdown


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _stage_table(stages: dict) -> list[str]:
    rows = ["| stage | seconds |", "|---|---:|"]
    for name, entry in stages.items():
        if name != "report":  # this page, being written
            rows.append(f"| {name} | {entry.get('seconds', '') if entry.get('state') == 'done' else 'unfinished'} |")
    total = sum(entry.get("seconds", 0) for entry in stages.values())
    return rows + [f"| total | {total:.0f} |"]


def _training(folder: Path, name: str) -> list[str]:
    summary = _json(folder / "summary.json")
    if not summary:
        return [f"- {name}: not trained"]
    logs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()] \
        if (folder / "metrics.jsonl").is_file() else []
    losses = [entry for entry in logs if "loss" in entry]
    line = (f"- **{name}** ({summary.get('mode')}): {summary.get('global_step')} steps on {summary.get('rows')} "
            f"rows in {summary.get('train_seconds', 0):.0f} s")
    if losses:
        first, last = losses[0], losses[-1]
        line += f"; loss {first['loss']:.3f} → {last['loss']:.3f}"
        for key, label in (("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin")):
            if key in last:
                line += f", {label} {first.get(key, float('nan')):.2f} → {last[key]:.2f}"
    return [line]


__all__ = ["run", "write_run_report"]


def run(cfg, run_dir: str | Path, stages: dict, log=print) -> dict:
    """The stage: RUN/report.md from the run's files and the ledger's `stages`."""
    path = write_run_report(run_dir, cfg, stages)
    log(f"report: {path}")
    return {"report": str(path)}


def write_run_report(run: str | Path, cfg, stages: dict) -> Path:
    run = Path(run)
    parts = [f"# Silkie run `{cfg.name}`", "",
             f"Folder `{run}`; seed {cfg.seed}; the resolved config is `config.yaml`. "
             "Every number below is read from the files this run wrote.", "", "## Stages", "",
             *_stage_table(stages), ""]

    collect = stages.get("collect", {}).get("summary", {})
    generate = stages.get("generate", {}).get("summary", {})
    parts += ["## Data", "",
              f"- Instructions: {collect.get('instructions')} from {', '.join(map(str, cfg.collect.sources))}",
              f"- Completions: {generate.get('completions')} from pool `{cfg.generate.pool}`",
              f"- Judge: `{cfg.annotate.judge}`", ""]
    judge = _json(run / "judge_report.json")
    if judge:
        from silkie.feedback.report import sections

        drawn = sections(judge)
        for heading in ("Parsing", "Position bias", "Ratings by aspect", "Mean rating by model"):
            parts += [f"### Judge: {heading.lower()}", "", drawn[heading], ""]

    dataset = stages.get("dataset", {}).get("summary", {})
    parts += ["## Preference pairs", "",
              "| recipe | policy | pairs | mean margin | chosen/rejected length | swapped (judge noise) |",
              "|---|---|---:|---:|---:|---:|"]
    for name, built in dataset.items():
        pairs = built.get("pairs") or {}
        parts.append(f"| {name} | {pairs.get('policy')} | {pairs.get('pairs')} | {pairs.get('mean_margin')} | "
                     f"{pairs.get('chosen_rejected_length_ratio')} | {pairs.get('swapped')} |")
    if cfg.dataset.judge_noise:
        parts += ["", f"**Judge noise: {cfg.dataset.judge_noise} of the pairs were swapped on purpose.**"]
    parts += ["", "## Training", "", *_training(run / "train", "silkie")]
    for name in cfg.baselines:
        parts += _training(run / "baselines" / name / "train", name)

    parts += ["", "## Base vs trained", ""]
    overlap = _json(run / "eval" / "base" / "mini.json").get("overlap")
    # the last eval stage has seen every round's instructions
    with_run = max((entry.get("summary", {}).get("overlap_with_run") or 0 for name, entry in stages.items()
                    if name.startswith("eval")), default=0)
    if overlap is not None:
        parts += [f"Evaluation items that share (scene content, prompt) with a training item: overlap = "
                  f"{overlap + with_run} ({overlap} with the pool's training data, {with_run} with this run's "
                  "instructions).", ""]
    shown = [("Silkie", run / "eval"), *[(f"Baseline: {b}", run / "eval" / f"{b}-vs-base") for b in cfg.baselines],
             *[(f"Round {r}: trained again on the round-{r - 1} model's own answers", run / "eval" /
                f"round-{r}-vs-base") for r in range(2, cfg.rounds + 1)]]
    for name, folder in shown:
        comparison = _json(folder / "comparison.json")
        if comparison:  # the comparison's own headings go one level down, under the model's
            parts += [f"### {name}", "", markdown(comparison).replace("### ", "#### ")]
    stats = _json(run / "stats" / "stats.json")
    if stats:
        from silkie.stats import markdown as stats_markdown

        parts += ["## Figures and tables", "", stats_markdown(stats, figures="stats", level=3)]
    out = run / "report.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    return out
