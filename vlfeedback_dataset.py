"""The VLFeedback dataset builder: a run folder or the release files -> a Hub-ready dataset repo.

`datasets` no longer runs dataset scripts, so this builder is used to *write* the data: it streams
rows through `datasets.GeneratorBasedBuilder` into size-split Parquet shards with the images
embedded, and the card's YAML declares the two configs, so that `load_dataset(DIR)` (or
`load_dataset("ORG/NAME")` once pushed) needs no code at all:

    DIR/README.md                          card + `configs:`
    DIR/data/default/train-*.parquet       one row per instruction, as in MMInstruction/VLFeedback
    DIR/data/pairs/{train,test}-*.parquet  TRL's vision-preference format
    DIR/build_report.json                  every flagged row and why

    python vlfeedback_dataset.py build (--from RUN_DIR | --from-release JSONL --images ZIP_OR_DIR) --out DIR
    python vlfeedback_dataset.py push DIR --repo-id ORG/NAME [--private]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import datasets

from silkie import InputError
from silkie.hub import CITATION
from silkie.schema import FEATURES, assistant_turn, user_turn


class VLFeedbackConfig(datasets.BuilderConfig):
    def __init__(self, *, run_dir=None, release=None, images=None, pair_policy="silkie", weights=None,
                 strict_ratings=False, judge_noise=0.0, test_fraction=0.005, split_seed=42, max_pixels=None,
                 report=None, **kwargs):
        super().__init__(**kwargs)
        self.run_dir, self.release, self.images = run_dir, release, images
        self.pair_policy, self.weights, self.strict_ratings = pair_policy, weights, strict_ratings
        self.judge_noise, self.test_fraction, self.split_seed = judge_noise, test_fraction, split_seed
        self.max_pixels = max_pixels
        self.report = report  # a silkie.dataset.BuildReport the build fills in


class VLFeedback(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = VLFeedbackConfig
    BUILDER_CONFIGS = [VLFeedbackConfig(name="default"), VLFeedbackConfig(name="pairs")]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self):
        return datasets.DatasetInfo(description="VLFeedback: AI-rated responses of vision-language models",
                                    features=FEATURES[self.config.name], citation=CITATION,
                                    license="cc-by-nc-4.0")

    def _split_generators(self, dl_manager):
        if self.config.name == "default":
            return [datasets.SplitGenerator(datasets.Split.TRAIN, gen_kwargs={"split": "train"})]
        return [datasets.SplitGenerator(datasets.Split.TRAIN, gen_kwargs={"split": "train"}),
                datasets.SplitGenerator(datasets.Split.TEST, gen_kwargs={"split": "test"})]

    def _rows(self, report):
        from silkie.dataset import BuildReport, checked_rows, release_rows, run_rows

        report = report if report is not None else BuildReport()
        source = run_rows(self.config.run_dir, report) if self.config.run_dir else \
            release_rows(self.config.release, self.config.images, report)
        return checked_rows(source, report, self.config.max_pixels)

    def _generate_examples(self, split):
        from silkie.dataset import default_record

        if self.config.name == "default":
            for row in self._rows(self.config.report):
                yield row["id"], default_record(row)
            return
        plan, test_rows = self._plan
        for index, row in enumerate(self._rows(None)):
            if index not in plan or (index in test_rows) != (split == "test"):
                continue
            for n, pair in enumerate(plan[index]):
                chosen, rejected = row["completions"][pair.chosen], row["completions"][pair.rejected]
                yield f"{row['id']}#{n}", {
                    "id": row["id"], "images": [row["image"]], "prompt": user_turn(row["prompt"]),
                    "chosen": assistant_turn(chosen.get("response") or ""),
                    "rejected": assistant_turn(rejected.get("response") or ""),
                    "chosen_model": str(chosen["model"]), "rejected_model": str(rejected["model"]),
                    "chosen_score": pair.chosen_score, "rejected_score": pair.rejected_score}

    @functools.cached_property
    def _plan(self):
        """Pairs per row index (a first pass over ratings only), and the rows held out as test;
        computed once for both splits."""
        from silkie.dataset import BuildReport
        from silkie.pairs import plan_pairs, row_from_completions

        ids = []

        def rows():
            for row in self._rows(BuildReport()):
                ids.append(row["id"])
                yield row_from_completions(row["id"], row["completions"], self.config.strict_ratings,
                                           usable=row["image"] is not None)

        pairs, report = plan_pairs(rows(), self.config.pair_policy, self.config.weights, seed=self.config.split_seed,
                                   judge_noise=self.config.judge_noise)
        plan: dict[int, list] = {}
        for pair in pairs:
            plan.setdefault(pair.row, []).append(pair)
        # Held out by row, not by pair, so no instruction is in both splits; at least one row.
        def rank(i):
            return hashlib.sha256(f"{self.config.split_seed}/{ids[i]}".encode()).hexdigest()
        with_pairs = sorted(plan, key=rank)
        n_test = max(1, round(self.config.test_fraction * len(with_pairs))) if len(with_pairs) > 1 else 0
        self.pair_report = report
        return plan, set(with_pairs[:n_test])


def build(out: str | Path, run_dir=None, release=None, images=None, pair_policy="silkie", weights=None,
          strict_ratings=False, judge_noise=0.0, max_shard_size="500MB", max_pixels=None, writer_batch_size=None):
    """Write the dataset repo folder; returns (out, BuildReport, pair report summary).

    Shards close once past `max_shard_size`, checked every `writer_batch_size` rows (a row group)."""
    from silkie.dataset import BuildReport, write_report

    if (run_dir is None) == (release is None):
        raise InputError("build needs exactly one of --from RUN_DIR or --from-release JSONL")
    for path in (run_dir, release, images):
        if path is not None and not Path(path).exists():
            raise InputError(f"no such file or folder: {path}")
    out = Path(out)
    report = BuildReport()
    settings = dict(run_dir=run_dir and str(run_dir), release=release and str(release),
                    images=images and str(images), pair_policy=pair_policy, weights=weights,
                    strict_ratings=strict_ratings, judge_noise=judge_noise, max_pixels=max_pixels)
    pair_summary = None
    with tempfile.TemporaryDirectory() as scratch:
        for config in ("default", "pairs"):
            builder = VLFeedback(config_name=config, cache_dir=f"{scratch}/cache", hash="local",
                                 writer_batch_size=writer_batch_size,
                                 report=report if config == "default" else None, **settings)
            prepared = Path(scratch) / config
            builder.download_and_prepare(output_dir=str(prepared), file_format="parquet",
                                         max_shard_size=max_shard_size)
            target = out / "data" / config
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for split in builder.info.splits:
                shards = sorted(prepared.glob(f"{builder.dataset_name}-{split}*.parquet"))
                for i, shard in enumerate(shards):
                    shutil.move(shard, target / f"{split}-{i:05d}-of-{len(shards):05d}.parquet")
            if config == "pairs":
                pair_summary = builder.pair_report.summary()
    write_report(report, out / "build_report.json")
    from silkie.hub import write_dataset_card

    write_dataset_card(out, report, pair_summary, settings)
    return out, report, pair_summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vlfeedback_dataset.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the Hub-ready dataset folder")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="run_dir", help="a run folder (instructions, completions, annotations)")
    source.add_argument("--from-release", dest="release", help="the release's vlfeedback_80k.jsonl")
    make.add_argument("--images", help="with --from-release: merged_images.zip or its extracted folder")
    make.add_argument("--out", required=True, help="the dataset folder, e.g. RUN/vlfeedback")
    make.add_argument("--pair-policy", default="silkie", help="silkie (default), margin:X, maxmin, best-vs-random, "
                      "aspect:NAME, longest, model:NAME")
    make.add_argument("--weights", help="aspect weights for ranking, e.g. H=1,V=2,E=1")
    make.add_argument("--strict-ratings", action="store_true", help="pair only ratings on the 1-5 scale")
    make.add_argument("--judge-noise", type=float, default=0.0, help="swap this share of pairs (robustness studies)")
    make.add_argument("--max-shard-size", default="500MB")
    push = commands.add_parser("push", help="upload a built folder to the Hub (token from HF_TOKEN)")
    push.add_argument("dir")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            out, report, pairs = build(args.out, run_dir=args.run_dir, release=args.release, images=args.images,
                                       pair_policy=args.pair_policy, weights=args.weights,
                                       strict_ratings=args.strict_ratings, judge_noise=args.judge_noise,
                                       max_shard_size=args.max_shard_size)
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
            print(f"built {out}: {counts}; {pairs['pairs']} pairs ({args.pair_policy})")
            print(f"flagged rows and reasons: {out / 'build_report.json'}")
        else:
            from silkie.hub import push_folder

            print(push_folder(args.dir, args.repo_id, repo_type="dataset", private=args.private))
    except (InputError, FileNotFoundError) as error:
        print(f"vlfeedback_dataset.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
