"""The collect sampler: quotas per source, a seeded order, de-duplication, resumable output.

Each source's records are read (text only), shuffled with Random(f"{seed}/{label}") and taken in
that order until the source's quota is met; a record whose image is missing or unreadable, or
which repeats a kept (image, prompt), is skipped and the next one takes its place. Sources are
taken in the order given, so on a repeat across sources the earlier source keeps it.

Output goes through `JsonlWriter`: a rerun skips ids already written and, because the order is
the same, adds exactly what an unbroken run would have added. Every skipped record is listed
with its reason in `collect_skipped.jsonl` beside the output; the summary counts them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from silkie import InputError
from silkie.io import ImageError, JsonlWriter, read_jsonl, store_image
from silkie.sources.base import Problem, SourceItem, Spec
from silkie.sources.specs import Reader, parse_quota, parse_source

# Instructions per source in the paper (80,258 in all): the default mix.
PAPER_QUOTAS = {
    "llava": 19_614, "svit": 22_823, "llavar": 13_770, "lrv": 12_357, "llava-med": 5_861,
    "comvint": 2_384, "pmc-vqa": 2_364, "m3it": 687, "pca-eval": 398,
}
SKIPPED_FILE = "collect_skipped.jsonl"

__all__ = ["CollectConfig", "CollectSummary", "SourceStats", "collect", "plan_quotas", "run"]


@dataclass
class CollectConfig:
    """The collect stage: `silkie collect`'s flags and `silkie run`'s `collect:` section."""
    sources: list[str] = field(default_factory=lambda: ["mini"], metadata={
        "flag": "--source", "append": True, "metavar": "NAME[OPTIONS][=PATH]",
        "help": "repeatable; NAME is llava, svit, llavar, lrv, comvint, m3it, vlsafe, jsonl, hub or mini; PATH its "
                "file or folder (hub: a dataset id); OPTIONS e.g. 'jsonl[prompt=question,image=img,images=DIR,"
                "name=LABEL]=data.jsonl'"})
    n: int = field(default=1000, metadata={"range": (1, None), "required": True,
                                           "help": "instructions to collect in all"})
    quotas: dict = field(default_factory=dict, metadata={
        "flag": "--quota", "append": True, "metavar": "NAME=N", "parse": lambda text: parse_quota(text),
        "help": "take N from source NAME (repeatable; default: the paper's mix, scaled to --n)"})
    images_root: str | None = field(default=None, metadata={
        "metavar": "DIR", "help": "where relative image paths resolve (default: each source file's folder)"})


def run(cfg: CollectConfig, run_dir: str | Path, seed: int = 0, log=print) -> dict:
    """The stage: collect into RUN/instructions.jsonl (+ images/); returns the ledger's summary."""
    from silkie.io import count_lines
    from silkie.layout import RunLayout

    out = RunLayout(run_dir).instructions
    summary = collect(cfg.sources, out, n=cfg.n, seed=seed, quotas=dict(cfg.quotas), images_root=cfg.images_root)
    log(summary.table())
    return {"instructions": count_lines(out), "added": summary.added}
DUPLICATE = "duplicate"


def plan_quotas(available: Mapping[str, int], n: int, explicit: Mapping[str, int] | None = None) -> dict[str, int]:
    """How many instructions to take from each source, in the order given.

    A source's share is its `--quota` if given, else its paper quota, else everything it has,
    and never more than it has. When the shares add up to more than `n`, those without a
    `--quota` are scaled down in proportion (largest remainders, ties to the earlier source) to
    fill what the explicit ones leave; explicit quotas are kept as given.
    """
    explicit = dict(explicit or {})
    fixed = sum(explicit.values())
    if fixed > n:
        raise InputError(f"--quota values add up to {fixed}, more than --n {n}")
    base = {s: explicit.get(s, min(PAPER_QUOTAS.get(s, count), count)) for s, count in available.items()}
    free = [s for s in base if s not in explicit]
    budget, wanted = n - fixed, sum(base[s] for s in free)
    if wanted <= budget:
        return base
    shares = {s: base[s] * budget / wanted for s in free}
    quotas = {**base, **{s: int(share) for s, share in shares.items()}}
    by_remainder = sorted(free, key=lambda s: -(shares[s] - int(shares[s])))  # stable: ties keep order
    for s in by_remainder[: budget - sum(quotas[s] for s in free)]:
        quotas[s] += 1
    return quotas


@dataclass
class SourceStats:
    label: str
    read: int = 0  # records in the source, usable or not
    quota: int = 0
    kept: int = 0  # in the output for this source, including those an earlier run wrote
    added: int = 0  # written by this run
    duplicates: int = 0
    errors: Counter = field(default_factory=Counter)  # reason -> records

    def skip(self, problem: Problem) -> None:
        if problem.reason == DUPLICATE:
            self.duplicates += 1
        else:
            self.errors[problem.reason] += 1


@dataclass
class CollectSummary:
    path: Path
    sources: list[SourceStats]
    skipped_path: Path | None = None  # where each skipped record is listed, if any was

    @property
    def added(self) -> int:
        return sum(s.added for s in self.sources)

    def table(self) -> str:
        header = ("source", "read", "quota", "kept", "new", "duplicates", "errors")
        rows = [(s.label, s.read, s.quota, s.kept, s.added, s.duplicates, sum(s.errors.values()))
                for s in self.sources]
        rows.append(("total", *(sum(r[i] for r in rows) for i in range(1, len(header)))))
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
                 for r in [header, *rows]]
        for s in self.sources:
            if s.errors:
                reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(s.errors.items()))
                lines.append(f"{s.label} errors: {reasons}")
        lines.append(f"wrote {self.path} ({self.added} new)" +
                     (f"; skipped records listed in {self.skipped_path}" if self.skipped_path else ""))
        return "\n".join(lines)


def _normalise(prompt: str) -> str:
    return " ".join(prompt.lower().split())


class _Skipped:
    """collect_skipped.jsonl, opened only once there is something to list."""

    def __init__(self, path: Path):
        self.path, self.writer = path, None

    def add(self, problem: Problem, source: str) -> None:
        if self.writer is None:
            self.writer = JsonlWriter(self.path)
        self.writer.write({"id": problem.id, "source": source, "reason": problem.reason, "detail": str(problem)})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _read(spec: Spec, reader: Reader, stats: SourceStats, skipped: _Skipped) -> list[SourceItem]:
    from silkie.schema import SchemaError, check_text_size, text_limit

    items, limit = [], text_limit()
    for entry in reader.read(spec):
        stats.read += 1
        if isinstance(entry, SourceItem):
            try:
                check_text_size(entry.prompt, "prompt", limit)
            except SchemaError as error:
                entry = Problem(entry.id, "prompt too long", f"{entry.id}: {error}")
        if isinstance(entry, Problem):
            stats.skip(entry)
            skipped.add(entry, spec.label)
        else:
            items.append(entry)
    if reader.shuffle:
        random.Random(f"{spec.seed}/{spec.label}").shuffle(items)
    return items


def _store(item: SourceItem, images: Path, seen: dict[tuple[str, str], str]) -> str:
    """Store the item's image and return its path, unless it is unreadable or repeats a kept item."""
    try:
        image = store_image(item.image(), images)
    except ImageError as error:
        raise Problem(item.id, "unreadable image", str(error)) from None
    key = (image, _normalise(item.prompt))  # the stored name is the content's hash
    if key in seen:
        raise Problem(item.id, DUPLICATE, f"same image and prompt as {seen[key]}")
    seen[key] = item.id
    return image


def collect(sources: Sequence[str], out: str | Path, n: int, seed: int = 0,
            quotas: Mapping[str, int] | None = None, images_root: str | Path | None = None) -> CollectSummary:
    """Sample up to `n` instructions from `sources` (`NAME[OPTIONS][=PATH]` specs) into `out`.

    Images are stored in `images/` beside `out`. Bad records never stop the run: they are
    counted in the returned summary and listed in `collect_skipped.jsonl` beside `out`.
    """
    from tqdm import tqdm

    if n < 1:
        raise InputError("--n must be at least 1")
    root = Path(images_root) if images_root else None
    parsed = [parse_source(text, root, n, seed) for text in sources]
    labels = [spec.label for spec, _ in parsed]
    if len(set(labels)) < len(labels):
        raise InputError(f"two sources are called {next(x for x in labels if labels.count(x) > 1)!r}; "
                         "tell them apart with [name=...]")
    unknown = sorted(set(quotas or {}) - set(labels))
    if unknown:
        raise InputError(f"--quota {unknown[0]}: no such source in this run (sources: {', '.join(labels)})")

    out = Path(out)
    skipped = _Skipped(out.parent / SKIPPED_FILE)
    stats = {label: SourceStats(label) for label in labels}
    try:
        items = {spec.label: _read(spec, reader, stats[spec.label], skipped) for spec, reader in parsed}
        plan = plan_quotas({label: len(found) for label, found in items.items()}, n, quotas)
        with JsonlWriter(out) as writer, tqdm(total=sum(plan.values()), desc="collect", unit="item",
                                              leave=False) as bar:
            # what is already written, so a rerun meets the same repeats as the first run did
            seen = {(r.get("image"), _normalise(str(r.get("prompt")))): r.get("id")
                    for _, r in read_jsonl(out) if isinstance(r, dict)}
            for label, found in items.items():
                source = stats[label]
                source.quota = plan[label]
                for item in found:
                    if source.kept >= source.quota:
                        break
                    if (item.id,) not in writer:
                        try:
                            image = _store(item, out.parent / "images", seen)
                        except Problem as problem:
                            source.skip(problem)
                            skipped.add(problem, label)
                            continue
                        writer.write({"id": item.id, "source": label, "prompt": item.prompt, "image": image,
                                      "meta": item.meta})
                        source.added += 1
                    source.kept += 1
                    bar.update()
    finally:
        skipped.close()
    return CollectSummary(out, list(stats.values()), skipped.path if skipped.writer else None)
