"""The VLFeedback dataset builder: a run folder or the release files -> a Hub-ready dataset repo.

`datasets` no longer runs dataset scripts, so the folder is written by `silkie.build.build` (Parquet
shards with the images embedded, and a card whose YAML declares the two configs), and
`load_dataset(DIR)` (or `load_dataset("ORG/NAME")` once pushed) needs no code at all. This file is
its command line, and `VLFeedback`, the same rows behind `datasets`' builder interface:

    python vlfeedback_dataset.py build (--from RUN_DIR | --from-release JSONL --images ZIP_OR_DIR) --out DIR
    python vlfeedback_dataset.py push DIR --repo-id ORG/NAME [--private]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

import datasets

from silkie import InputError
from silkie.build import DatasetConfig, build, pair_records, plan, source_rows
from silkie.config import add_flags, from_dict, given_flags
from silkie.dataset import MAX_COMPLETIONS, MAX_IMAGE_BYTES, BuildReport, default_record
from silkie.hub import CITATION
from silkie.schema import FEATURES


class VLFeedbackConfig(datasets.BuilderConfig):
    def __init__(self, *, run_dir=None, release=None, images=None, pair_policy="silkie", weights=None,
                 strict_ratings=False, judge_noise=0.0, max_pixels=None, max_image_bytes=MAX_IMAGE_BYTES,
                 max_completions=MAX_COMPLETIONS, report=None, **kwargs):
        super().__init__(**kwargs)
        # one attribute per keyword: `datasets` sets them by name on a copy of the named config
        self.run_dir, self.release, self.images, self.max_pixels = run_dir, release, images, max_pixels
        self.pair_policy, self.weights, self.strict_ratings = pair_policy, weights, strict_ratings
        self.judge_noise, self.max_image_bytes, self.max_completions = judge_noise, max_image_bytes, max_completions
        self.report = report  # a silkie.dataset.BuildReport the `default` config fills in

    @property
    def source(self) -> dict:
        return {"run_dir": self.run_dir, "release": self.release, "images": self.images, "max_pixels": self.max_pixels,
                "max_image_bytes": self.max_image_bytes, "max_completions": self.max_completions}

    @property
    def pairing(self) -> dict:
        return {"policy": self.pair_policy, "weights": self.weights, "strict_ratings": self.strict_ratings,
                "judge_noise": self.judge_noise, "max_completions": self.max_completions}


class VLFeedback(datasets.GeneratorBasedBuilder):
    """`datasets` prepares each config and split on its own, so this reads the source once per split
    (and once more to plan `pairs`); `build` reads it once in all."""

    BUILDER_CONFIG_CLASS = VLFeedbackConfig
    BUILDER_CONFIGS = [VLFeedbackConfig(name="default"), VLFeedbackConfig(name="pairs")]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self):
        return datasets.DatasetInfo(description="VLFeedback: AI-rated responses of vision-language models",
                                    features=FEATURES[self.config.name], citation=CITATION,
                                    license="cc-by-nc-4.0")

    def _split_generators(self, dl_manager):
        splits = ["train"] if self.config.name == "default" else ["train", "test"]
        return [datasets.SplitGenerator(split, gen_kwargs={"split": split}) for split in splits]

    def _generate_examples(self, split):
        if self.config.name == "default":
            for row in source_rows(self.config.report or BuildReport(), **self.config.source):
                yield row["id"], default_record(row)
            return
        for index, row in enumerate(source_rows(BuildReport(), **self.config.source)):
            if (index in self._plan.test) == (split == "test"):
                for n, record in enumerate(pair_records(row, self._plan.pairs.get(index, ()))):
                    yield f"{row['id']}#{n}", record

    @functools.cached_property
    def _plan(self):
        return plan(source_rows(BuildReport(), **self.config.source), **self.config.pairing)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vlfeedback_dataset.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the Hub-ready dataset folder")
    source = make.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="run_dir", help="a run folder (instructions, completions, annotations)")
    source.add_argument("--from-release", dest="release", help="the release's vlfeedback_80k.jsonl")
    make.add_argument("--images", help="with --from-release: merged_images.zip or its extracted folder")
    make.add_argument("--out", required=True, help="the dataset folder, e.g. RUN/vlfeedback")
    add_flags(make, DatasetConfig)
    make.add_argument("--max-shard-size", default="500MB")
    push = commands.add_parser("push", help="upload a built folder to the Hub (token from HF_TOKEN)")
    push.add_argument("dir")
    push.add_argument("--repo-id", required=True)
    push.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            cfg = from_dict(DatasetConfig, given_flags(DatasetConfig, args), "vlfeedback_dataset.py build")
            cfg.validate("vlfeedback_dataset.py build")
            out, report, pairs = build(args.out, run_dir=args.run_dir, release=args.release, images=args.images,
                                       max_shard_size=args.max_shard_size, **dataclasses.asdict(cfg))
            counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
            print(f"built {out}: {counts}; {pairs['pairs']} pairs ({cfg.pair_policy})")
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
