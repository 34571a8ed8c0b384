"""Build a Hub-ready VLFeedback folder from a run folder or the release files, reading the source once.

    OUT/README.md                          card + `configs:` (so `load_dataset(OUT)` needs no code)
    OUT/data/default/train-*.parquet       one row per instruction, as in MMInstruction/VLFeedback
    OUT/data/pairs/{train,test}-*.parquet  TRL's vision-preference format
    OUT/build_report.json                  every flagged row and why
    OUT/ratings.json                       the rating summary of `default` (silkie/ratings.py)
    OUT/card_stats.json                    rows, sources and models, and the pair report

One pass over the source (`silkie/dataset.py` reads and checks the rows, images included) writes
`default`, counts the ratings and hands each row's ratings to the pair planner. Pairs need the whole
plan first (the test rows are ranked over all rows, judge noise is seeded over all pairs), so they
are written in a second pass over the `default` shards just written, which already hold the checked
rows and their images: the run's records and images are never read or checked twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from silkie import InputError
from silkie.dataset import MAX_COMPLETIONS, MAX_IMAGE_BYTES
from silkie.schema import FEATURES, assistant_turn, user_turn

TEST_FRACTION, SPLIT_SEED = 0.005, 42  # pairs held out by instruction; the seed also seeds the policies
SPLITS = ("instruction", "official")

__all__ = ["DatasetConfig", "build", "run", "source_rows"]


@dataclass
class DatasetConfig:
    """The dataset stage: how rated rows become preference pairs, and the bounds on what one row may
    cost. `vlfeedback_dataset.py build`'s flags and `silkie run`'s `dataset:` section."""
    pair_policy: str = field(default="silkie", metadata={
        "help": "silkie (every pair whose mean rating differs, as in the paper), margin:X, maxmin, best-vs-random, "
                "aspect:NAME, longest, model:NAME"})
    weights: str | None = field(default=None, metadata={"help": "aspect weights for ranking, e.g. H=1,V=2,E=1"})
    strict_ratings: bool = field(default=False, metadata={"help": "pair only ratings on the 1-5 scale"})
    split: str = field(default="instruction", metadata={
        "help": "instruction (hold out whole instructions, no prompt in both splits) or official (the authors' "
                "split by pair, train_test_split(test_size=0.005, seed=42) on the full pair list)"})
    judge_noise: float = field(default=0.0, metadata={
        "range": (0, 1), "help": "swap this share of pairs on purpose (how much judge error a recipe tolerates)"})
    max_completions: int = field(default=MAX_COMPLETIONS, metadata={
        "range": (2, None), "help": f"a row with more completions (the release has 4) is kept in default, reported, "
                                    f"and pairs nothing: pairing is quadratic in them (default {MAX_COMPLETIONS})"})
    max_image_bytes: int = field(default=MAX_IMAGE_BYTES, metadata={
        "range": (1, None), "help": f"an image over this many bytes (a zip entry's declared or actual size, or a "
                                    f"file) is refused unread, its row reported (default {MAX_IMAGE_BYTES:,})"})

    def validate(self, where: str) -> None:
        from silkie.config import named
        from silkie.pairs import parse_policy, parse_weights

        named(f"{where}.pair_policy", parse_policy, self.pair_policy)
        named(f"{where}.weights", parse_weights, self.weights)
        if self.split not in SPLITS:
            raise InputError(f"{where}.split: {self.split!r} is not one of {', '.join(SPLITS)}")


def run(cfg: DatasetConfig, run_dir: str | Path, out: str | Path | None = None, log=print) -> dict:
    """The stage: build RUN/vlfeedback (or `out`, e.g. a baseline's own pairs) from the run's records."""
    from silkie.layout import RunLayout

    layout = RunLayout(run_dir)
    out, report, pairs = build(out or layout.dataset, run_dir=layout.root, **dataclasses.asdict(cfg))
    log(f"dataset: {pairs['pairs']} pairs ({cfg.pair_policy}) in {out}")
    return {"rows": dict(report.counts), "pairs": pairs}


def source_rows(report, run_dir=None, release=None, images=None, max_pixels=None,
                max_image_bytes=MAX_IMAGE_BYTES, max_completions=MAX_COMPLETIONS) -> Iterator[dict]:
    """Checked `default` rows (images read and checked) of a run folder or the release files. The
    release's zip is opened here, so one that cannot be listed is an InputError before any row."""
    from silkie.dataset import checked_rows, release_rows, run_rows

    rows = run_rows(run_dir, report, max_image_bytes) if run_dir else \
        release_rows(release, images, report, max_image_bytes)
    return checked_rows(rows, report, max_pixels, max_completions)


@dataclass
class PairPlan:
    pairs: dict  # row index -> [pairs.Pair]
    test: set  # row indices held out as the test split (split="instruction")
    report: object  # pairs.PairReport
    test_pairs: set | None = None  # (row, completion, completion) held out, lower index first (split="official")

    def split_of(self, row: int, pair) -> str:
        if self.test_pairs is None:
            return "test" if row in self.test else "train"
        key = (row, min(pair.chosen, pair.rejected), max(pair.chosen, pair.rejected))
        return "test" if key in self.test_pairs else "train"


def official_test_positions(n: int) -> set[int]:
    """Positions held out by the authors' split of n pairs: `datasets`' `Dataset.train_test_split(test_size=0.005,
    seed=42)` (vlf-silkie/VLFeedback run_dpo.py @ e6ddec70175d5f78f2644fd77c99343a2ed2dfa6), which takes the
    first ceil(0.005 n) of `np.random.default_rng(42).permutation(n)` (datasets 2.x to 5.x). With fewer than
    2 pairs that call fails; we hold out none."""
    if n < 2:
        return set()
    return set(np.random.default_rng(SPLIT_SEED).permutation(n)[:math.ceil(TEST_FRACTION * n)].tolist())


def plan(rows: Iterable[dict], policy="silkie", weights=None, strict_ratings=False, judge_noise=0.0,
         max_completions=MAX_COMPLETIONS, split="instruction") -> PairPlan:
    """Plan the pairs on ratings alone, consuming `rows` (checked rows) once.

    split="official" numbers the pairs as the authors' script lists them (rows in order, then each row's
    pairs (i, j), i < j, in order), counting the pairs of rows without a usable image, and holds out the
    pairs at `official_test_positions`; the image-less pairs are then dropped from both splits."""
    from silkie.pairs import plan_pairs, row_from_completions

    if split not in SPLITS:
        raise InputError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    ids, unusable = [], {}  # unusable: row index -> pairs it would give with its image (official split)

    def ratings():
        for row in rows:
            rated = row_from_completions(row["id"], row["completions"], strict_ratings,
                                         usable=row["image"] is not None)
            if split == "official" and not rated.usable:
                unusable[len(ids)] = plan_pairs([dataclasses.replace(rated, usable=True)], policy, weights,
                                                max_completions=max_completions)[0]
            ids.append(row["id"])
            yield rated

    pairs, report = plan_pairs(ratings(), policy, weights, seed=SPLIT_SEED, judge_noise=judge_noise,
                               max_completions=max_completions)
    by_row: dict[int, list] = {}
    for pair in pairs:
        by_row.setdefault(pair.row, []).append(pair)
    if split == "official":
        listed = []  # the full pair list, in the authors' order
        for index in range(len(ids)):
            row_pairs = unusable[index] if index in unusable else by_row.get(index, [])
            listed.extend(sorted((index, min(p.chosen, p.rejected), max(p.chosen, p.rejected)) for p in row_pairs))
        held = {listed[k] for k in official_test_positions(len(listed))}
        return PairPlan(by_row, {key[0] for key in held}, report, held)
    # Held out by row, not by pair, so no instruction is in both splits; at least one row.
    ranked = sorted(by_row, key=lambda i: hashlib.sha256(f"{SPLIT_SEED}/{ids[i]}".encode()).hexdigest())
    n_test = max(1, round(TEST_FRACTION * len(ranked))) if len(ranked) > 1 else 0
    return PairPlan(by_row, set(ranked[:n_test]), report)


def pair_records(row: dict, pairs: list) -> Iterator[dict]:
    """The `pairs` records of one row (completions row- or column-wise)."""
    from silkie.dataset import completions_list

    completions = completions_list(row["completions"])
    for pair in pairs:
        chosen, rejected = completions[pair.chosen], completions[pair.rejected]
        yield {"id": row["id"], "images": [row["image"]], "prompt": user_turn(row["prompt"]),
               "chosen": assistant_turn(chosen.get("response") or ""),
               "rejected": assistant_turn(rejected.get("response") or ""),
               "chosen_model": str(chosen["model"]), "rejected_model": str(rejected["model"]),
               "chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score}


class Shards:
    """One split's Parquet shards, written with `datasets`' own writer (features encoded, images embedded)
    and cut as `download_and_prepare` cuts them: a new shard once the current one is past `max_bytes`,
    checked before each row, so it is measured every `batch_size` rows (a row group)."""

    def __init__(self, folder: Path, split: str, config: str, max_bytes: int, batch_size: int | None):
        self.folder, self.split, self.features = folder, split, FEATURES[config]
        self.max_bytes, self.batch_size = max_bytes, batch_size
        self.paths: list[Path] = []
        self.writer = None
        folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> None:
        from datasets.arrow_writer import ParquetWriter

        self.paths.append(self.folder / f".{self.split}-{len(self.paths):05d}")
        self.writer = ParquetWriter(features=self.features, path=str(self.paths[-1]),
                                    writer_batch_size=self.batch_size, embed_local_files=True)

    def _finish(self) -> None:
        self.writer.finalize()
        self.writer.close()

    def write(self, record: dict) -> None:
        if self.writer is None:
            self._open()
        elif self.writer._num_bytes > self.max_bytes:  # the measure `datasets`' builder cuts by
            self._finish()
            self._open()
        self.writer.write(self.features.encode_example(record))

    def close(self) -> list[Path]:
        if self.writer is None:
            self._open()  # an empty split still gets its one (empty) shard, as `datasets` writes it
        self._finish()
        n = len(self.paths)
        self.paths = [p.rename(self.folder / f"{self.split}-{i:05d}-of-{n:05d}.parquet")
                      for i, p in enumerate(self.paths)]
        return self.paths


def _written_rows(paths: list[Path]) -> Iterator[dict]:
    import pyarrow.parquet as pq

    columns = ["id", "prompt", "completions", "image"]
    for path in paths:
        # pre_buffer (pyarrow's default) reads a whole shard's columns ahead: memory would grow with the shard
        for batch in pq.ParquetFile(path, pre_buffer=False).iter_batches(batch_size=64, columns=columns):
            yield from batch.to_pylist()


def build(out: str | Path, run_dir=None, release=None, images=None, pair_policy="silkie", weights=None,
          strict_ratings=False, judge_noise=0.0, max_shard_size="500MB", max_pixels=None, writer_batch_size=None,
          max_completions=MAX_COMPLETIONS, max_image_bytes=MAX_IMAGE_BYTES, split="instruction"):
    """Write the dataset repo folder; returns (out, BuildReport, pair report summary).

    Shards close once past `max_shard_size`, checked every `writer_batch_size` rows (a row group).
    `split` picks how pairs are held out: by instruction (default) or the authors' split by pair.
    `max_completions` and `max_image_bytes` bound what one row may cost (see DatasetConfig)."""
    from datasets.utils.py_utils import convert_file_size_to_int

    from silkie.dataset import BuildReport, default_record, write_build_report
    from silkie.hub import write_dataset_card
    from silkie.ratings import RatingSummary, write

    if split not in SPLITS:
        raise InputError(f"--split: {split!r} is not one of {', '.join(SPLITS)}")
    if (run_dir is None) == (release is None):
        raise InputError("build needs exactly one of --from RUN_DIR or --from-release JSONL")
    for path in (run_dir, release, images):
        if path is not None and not Path(path).exists():
            raise InputError(f"no such file or folder: {path}")
    report, ratings = BuildReport(), RatingSummary()
    rows = source_rows(report, run_dir, release, images, max_pixels, max_image_bytes, max_completions)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".build-*"):  # a killed build's scratch, which a push would otherwise upload
        shutil.rmtree(leftover, ignore_errors=True)
    counts = {"rows": 0, "sources": Counter()}
    settings = dict(run_dir=run_dir and str(run_dir), release=release and str(release),
                    images=images and str(images), pair_policy=pair_policy, weights=weights,
                    strict_ratings=strict_ratings, judge_noise=judge_noise, max_pixels=max_pixels,
                    **({"split": split} if split != "instruction" else {}))
    sizes = {"max_bytes": convert_file_size_to_int(max_shard_size), "batch_size": writer_batch_size}
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as scratch:
        default = Shards(Path(scratch) / "default", "train", "default", **sizes)

        def first_pass():  # the one read of the source: rows go to `default`, the counts and the planner
            for row in rows:
                default.write(default_record(row))
                counts["rows"] += 1
                counts["sources"][row["source"]] += 1
                for completion in row["completions"]:
                    ratings.add(completion.get("model"), completion.get("annotations"))
                yield row

        pairs = plan(first_pass(), pair_policy, weights, strict_ratings, judge_noise, max_completions, split)
        written = default.close()
        splits = {split: Shards(Path(scratch) / "pairs", split, "pairs", **sizes) for split in ("train", "test")}
        for index, row in enumerate(_written_rows(written)):
            held: dict[str, list] = {"train": [], "test": []}
            for pair in pairs.pairs.get(index, ()):
                held[pairs.split_of(index, pair)].append(pair)
            for split, chosen in held.items():
                for record in pair_records(row, chosen):
                    splits[split].write(record)
        for split in splits.values():
            split.close()
        for config in ("default", "pairs"):
            target = out / "data" / config
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(exist_ok=True)
            shutil.move(Path(scratch) / config, target)
    pair_summary, summary = pairs.report.summary(), ratings.to_json()
    write_build_report(report, out / "build_report.json")
    write(summary, out / "ratings.json")
    responses = sorted(summary["models"].items(), key=lambda item: -item[1]["responses"])
    statistics = {"rows": counts["rows"], "sources": dict(counts["sources"].most_common()),
                  "models": {model: entry["responses"] for model, entry in responses}}
    (out / "card_stats.json").write_text(json.dumps({"statistics": statistics, "pairs": pair_summary}, indent=1) + "\n")
    write_dataset_card(out, settings)
    return out, report, pair_summary
