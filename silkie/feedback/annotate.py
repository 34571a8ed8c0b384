"""`silkie annotate`: every instruction's responses rated by a judge on the three aspects.

Reads instructions and completions (shards included), shows each instruction's successful
responses to the judge in an order shuffled by (seed, id), maps the ratings back to the original
order and appends one record per id. Resumable by id; answers are cached in RUN/cache.sqlite, so
a rerun or a killed run re-pays nothing.

What a rerun retries: items *deferred* by the budget, by a provider in trouble or by a batch not
yet answered have no record, so the next run judges them. Items that failed for good (a bad
image, a refused input, a reply unreadable after its re-ask, a reply past its request's bounds —
usage it cannot have used, more bytes than max_tokens allows —, no successful response) are written
with their `error` and, like failed completions, are not retried.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from silkie import InputError
from silkie.feedback.base import Item, Verdict
from silkie.feedback.openai_judge import JudgeConfig, load_judge_config
from silkie.schema import ASPECTS, rating_value

JUDGES = ("openai", "scene")
SWAP = "#swap"  # key suffix of an item's second, order-reversed judgement


@dataclass
class AnnotateConfig:
    """The annotate stage: `silkie annotate`'s flags (with the judge config's) and `silkie run`'s
    `annotate:` section."""
    # the embedded default is the mini world's judge; `silkie annotate` defaults to openai, as it always has
    judge: str = field(default="scene", metadata={
        "choices": JUDGES, "help": "openai: any OpenAI-compatible API (a vLLM server via --base-url); "
                                   "scene: the mini world's grounded judge (default: openai)"})
    config: str = field(default="gpt-4o", metadata={
        "flag": "--judge-config", "metavar": "NAME|FILE",
        "help": "judge preset in configs/judge/ or a YAML file; flags override it"})
    overrides: dict = field(default_factory=dict)  # judge config keys; on the command line, the judge's own flags


def run(cfg: AnnotateConfig, run_dir: str | Path, seed: int = 0, log=print) -> dict:
    """The stage: judge RUN/completions.jsonl into RUN/annotations.jsonl (+ the judge report)."""
    from silkie.io import count_lines
    from silkie.layout import RunLayout

    layout = RunLayout(run_dir)
    summary = annotate(layout.instructions, layout.completions, layout.annotations, judge=cfg.judge,
                       config=cfg.config, overrides={"seed": seed, **cfg.overrides})
    log(summary.table())
    if summary.deferred:
        raise InputError(f"annotate: {summary.deferred} items deferred by the judge (rate or budget limit); "
                         "rerun `silkie run` to judge them")
    return {"annotations": count_lines(layout.annotations), "judge": cfg.judge}


@dataclass
class AnnotateSummary:
    out: Path
    judge: str
    paid: bool = False  # a judge that sends requests (the scene judge does not)
    counts: Counter = field(default_factory=Counter)
    spend_usd: float | None = 0.0  # None: the judge model has no price
    estimate: Counter | None = None  # --dry-run only

    @property
    def deferred(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith("deferred"))

    def table(self) -> str:
        c = self.counts
        if self.estimate is not None:
            e = self.estimate
            cost = f"${e['cost_usd']:.2f} (worst case ${e['worst_cost_usd']:.2f})" if self.spend_usd is not None \
                else "unknown: the judge model has no price in the config"
            return "\n".join([
                f"dry run, nothing sent: {e['items']} judgements to make ({c['done']} ids already annotated)",
                f"requests: {e['requests']} to send, {e['cached']} answered by the cache",
                f"tokens (estimated): {e['prompt_tokens']:,} prompt, {e['completion_tokens']:,} completion",
                f"cost (estimated): {cost}"])
        spend = f"${self.spend_usd:.4f}" if self.spend_usd is not None else "unpriced"
        lines = [f"judge {self.judge}: {c['judged']} items judged, {c['errors']} with errors, "
                 f"{self.deferred} deferred, {c['done']} already done"]
        if self.paid:
            lines += [f"requests: {c['requests']} sent, {c['cache_hits']} cache hits, {c['retries']} retries, "
                      f"{c['reasks']} re-asks",
                      f"spend: {spend} ({c['prompt_tokens']:,} prompt + {c['completion_tokens']:,} completion tokens)"]
            if c["batched"] or c["batch_answers"]:
                lines.append(f"batch: {c['batched']} requests submitted, {c['batch_answers']} answers collected, "
                             f"{c['batch_failed']} failed, {c['batch_budget']} held back by the budget")
        lines.append(f"ratings: {c['invalid_ratings']} invalid, {c['contradictions']} rationales contradicting "
                     f"their rating")
        if c["swap_cells"]:
            lines.append(f"position consistency: {c['swap_agree'] / c['swap_cells']:.3f} of ratings unchanged "
                         f"with the order reversed ({c['swapped']} items)")
        advice = {"budget": "rerun with a higher --budget-usd", "provider": "the provider failed; rerun",
                  "batch": "no batch answered them yet; rerun to batch them"}
        for reason, what in advice.items():
            if c["deferred_" + reason]:
                lines.append(f"{c['deferred_' + reason]} items not judged yet: {what}")
        for reason in ("no_completions", "bad_instructions", "bad_completions", "skipped_responses"):
            if c[reason]:
                lines.append(f"{reason.replace('_', ' ')}: {c[reason]}")
        return "\n".join(lines)


def annotate(instructions: str | Path, completions: str | Path, out: str | Path, judge: str = "openai",
             config: str | JudgeConfig = "gpt-4o", overrides: dict | None = None, dry_run: bool = False,
             progress: bool = True) -> AnnotateSummary:
    """Judge every instruction's completions into `out`; see the module docstring.

    config: a judge preset name, a YAML file or a JudgeConfig; overrides: config keys to replace
    (None values are ignored), the CLI's flags. Writes `out`, RUN/judge_report.md and
    RUN/judge_config.yaml (and RUN/<out>.batches.json with --batch); --dry-run writes nothing.
    """
    from silkie.cache import RequestCache

    if judge not in JUDGES:
        raise InputError(f"unknown judge {judge!r} (known: {', '.join(JUDGES)})")
    config = _override(config, overrides) if isinstance(config, JudgeConfig) else load_judge_config(config, overrides)
    instructions, completions, out = Path(instructions), Path(completions), Path(out)
    cache_path = out.parent / "cache.sqlite"
    cache = RequestCache(cache_path) if not dry_run or cache_path.exists() else None
    try:
        return _Stage(instructions, completions, out, judge, config, cache).run(dry_run, progress)
    finally:
        if cache is not None:
            cache.close()


def _override(config: JudgeConfig, overrides: dict | None) -> JudgeConfig:
    import dataclasses

    return dataclasses.replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None})


def make_judge(name: str, config: JudgeConfig, cache):
    if name == "scene":
        from silkie.world.judge import SceneJudge

        return SceneJudge()
    from silkie.feedback.openai_judge import OpenAIJudge

    return OpenAIJudge(config, cache)


def shown_order(n: int, seed: int, record_id: str) -> list[int]:
    """The order the judge sees the responses in: order[j] is the index (into `models`) of Text j+1."""
    order = list(range(n))
    random.Random(f"{seed}/{record_id}").shuffle(order)
    return order


def swap_checked(seed: int, record_id: str, share: float) -> bool:
    digest = hashlib.sha256(f"{seed}/swap/{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass
class _Plan:
    record: dict  # the annotation record, without its verdicts yet
    waiting: int  # verdicts still to come (2 when swap-checked)
    swap: list[int] | None = None
    verdicts: dict = field(default_factory=dict)  # "main" / "swap" -> Verdict


class _Stage:
    def __init__(self, instructions: Path, completions: Path, out: Path, judge_name: str, config: JudgeConfig,
                 cache):
        self.instructions, self.completions, self.out, self.config = instructions, completions, out, config
        self.judge = make_judge(judge_name, config, cache)
        self.summary = AnnotateSummary(out, self.judge.name, paid=hasattr(self.judge, "ledger"))
        self.index = None  # an io.CompletionIndex while run() runs
        self.plans: dict[str, _Plan] = {}

    def run(self, dry_run: bool, progress: bool) -> AnnotateSummary:
        from silkie.io import CompletionIndex

        if dry_run and not self.summary.paid:
            raise InputError(f"--dry-run estimates a paid judge's cost; the {self.judge.name} judge is free")
        counts = self.summary.counts
        with CompletionIndex(self.completions, on_bad=lambda _: counts.update(bad_completions=1)) as self.index:
            return self._run(dry_run, progress)

    def _run(self, dry_run: bool, progress: bool) -> AnnotateSummary:
        from tqdm import tqdm

        from silkie.io import JsonlWriter, read_jsonl

        c, paid = self.summary.counts, self.summary.paid
        if dry_run:
            done = {r["id"] for _, r in read_jsonl(self.out) if isinstance(r, dict)} if self.out.exists() else set()
            self.summary.estimate = self.judge.estimate(self._items(done, count=True))
            self.summary.spend_usd = None if self.config.price is None else 0.0
            return self.summary
        self._save_config()
        with JsonlWriter(self.out) as writer:
            done = {key[0] for key in writer.done}
            total = sum(1 for r in self._instructions(done) if self.index.of(r["id"]))
            if self.config.batch and paid:
                from silkie.feedback.batch import run_batches, state_path

                self.judge.batched = True
                c.update(run_batches(self.judge, self._items(done), state_path(self.out), progress))
            bar = tqdm(total=total, desc=f"annotate ({self.judge.name})", unit="item", disable=not progress)
            for verdict in self.judge.judge(self._items(done, writer.write, count=True)):
                self._take(verdict, writer.write)
                bar.update(not verdict.key.endswith(SWAP))
                if paid:
                    bar.set_postfix_str(f"${self.judge.ledger.spent:.4f}", refresh=False)
            bar.close()
        if paid:
            ledger = self.judge.ledger
            c.update(self.judge.stats)
            c["prompt_tokens"], c["completion_tokens"] = ledger.prompt_tokens, ledger.completion_tokens
            self.summary.spend_usd = ledger.spent if self.config.price else None
        from silkie.feedback.report import write_judge_report

        write_judge_report(self.out, self.out.parent / "judge_report.md", self.summary)
        return self.summary

    def _save_config(self) -> None:
        import yaml

        # Which judge ran with these settings; never the key, only the variable that holds it.
        settings = {"judge": "scene" if not self.summary.paid else "openai", **asdict(self.config)}
        settings["base_url"] = _without_credentials(settings["base_url"])
        (self.out.parent / "judge_config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))

    def _instructions(self, done: set, count: bool = False) -> Iterator[dict]:
        from silkie.io import read_checked

        for _, record in read_checked(self.instructions, "instruction", images=False):
            if isinstance(record, Exception):
                self.summary.counts["bad_instructions"] += count
            elif record["id"] in done:
                self.summary.counts["done"] += count
            else:
                yield record

    def _items(self, done: set, write=None, count: bool = False) -> Iterator[Item]:
        """The judge's items, in instruction order. With `write`, items that cannot be judged are
        written at once as error records and every other one is planned for `_take`; `count`
        counts what the pass meets (once per run, however many passes)."""
        from silkie.io import resolve_inside

        c = self.summary.counts if count else Counter()
        for record in self._instructions(done, count):
            rows = self.index.of(record["id"])
            if not rows:
                c["no_completions"] += 1  # not generated yet: a later run judges it
                continue
            models = [m for m, _, error in rows if error is None]
            responses = [r for _, r, error in rows if error is None]
            annotation = {"id": record["id"], "models": models, "annotations": [],
                          "judge": {"name": self.judge.name, "prompt_version": self.judge.prompt_version,
                                    "order": [], "usage": {}}, "error": None}
            skipped = [m for m, _, error in rows if error is not None]
            if skipped:
                annotation["skipped"] = skipped
                c["skipped_responses"] += len(skipped)
            try:
                image = resolve_inside(self.instructions.parent, record["image"])
                if not responses:
                    raise InputError("no successful completion to judge")
            except InputError as error:
                if write:
                    annotation["error"] = str(error)
                    self._write(annotation, write)
                continue
            order = shown_order(len(models), self.config.seed, record["id"])
            swap = order[::-1] if len(models) > 1 and swap_checked(self.config.seed, record["id"],
                                                                   self.config.swap_check) else None
            if write:
                self.plans[record["id"]] = _Plan(annotation, 2 if swap else 1, swap)
            yield Item(record["id"], record, image, [responses[i] for i in order])
            if swap:
                yield Item(record["id"] + SWAP, record, image, [responses[i] for i in swap])

    def _take(self, verdict: Verdict, write) -> None:
        record_id, is_swap = (verdict.key[:-len(SWAP)], True) if verdict.key.endswith(SWAP) else (verdict.key, False)
        plan = self.plans[record_id]
        plan.verdicts["swap" if is_swap else "main"] = verdict
        plan.waiting -= 1
        if plan.waiting:
            return
        del self.plans[record_id]
        main, annotation = plan.verdicts["main"], plan.record
        c = self.summary.counts
        if main.deferred:
            c["deferred_" + main.deferred] += 1
            return
        swap = plan.verdicts.get("swap")
        # The record's usage and re-asks cover both of its judgements: what this id cost.
        usage, reasks, cached = Counter(main.usage), main.reasks, main.cached
        if swap:
            usage.update(swap.usage)
            reasks, cached = reasks + swap.reasks, cached and swap.cached
        order = shown_order(len(annotation["models"]), self.config.seed, record_id)
        annotation["judge"].update(order=order, usage={k: round(v, 8) for k, v in usage.items()}, reasks=reasks,
                                   cached=cached)
        annotation["annotations"] = _in_original_order(main.ratings, order)
        annotation["error"] = main.error
        if swap and not swap.deferred and not swap.error:
            swapped = _in_original_order(swap.ratings, plan.swap)
            annotation["judge"]["swap"] = {"order": plan.swap, "ratings": [{a: r[a]["Rating"] for a in ASPECTS}
                                                                          for r in swapped]}
            if not main.error:
                c["swapped"] += 1
                for first, second in zip(annotation["annotations"], swapped):
                    for aspect in ASPECTS:
                        c["swap_cells"] += 1
                        c["swap_agree"] += first[aspect]["Rating"] == second[aspect]["Rating"]
        self._write(annotation, write)

    def _write(self, annotation: dict, write) -> None:
        from silkie.feedback.parse import contradiction

        c = self.summary.counts
        if annotation["error"] is not None:
            c["errors"] += 1
        else:
            c["judged"] += 1
            for cells in annotation["annotations"]:
                for aspect in ASPECTS:
                    rating, rationale = cells[aspect]["Rating"], cells[aspect]["Rationale"]
                    c["invalid_ratings"] += rating_value(rating) is None
                    c["contradictions"] += contradiction(rating, rationale) is not None
        write(annotation)


def _in_original_order(ratings: list[dict], order: list[int]) -> list[dict]:
    """Ratings listed as shown, put back in the order of `models`; [] stays [] (a failed judgement)."""
    if not ratings:
        return []
    original = [None] * len(order)
    for shown, index in enumerate(order):
        original[index] = ratings[shown]
    return original


def _without_credentials(url: str | None) -> str | None:
    """A base URL may carry user:password@; the saved config must not."""
    from urllib.parse import urlsplit, urlunsplit

    if not url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
