"""`silkie run`: the whole Silkie loop as resumable stages over one run folder.

    collect -> generate -> annotate -> dataset -> train -> eval -> stats -> report

Each stage calls the same library function as its own command and writes the same files, so a
run folder can be inspected, resumed or continued by hand. RUN/stages.json records, per stage, a
fingerprint of everything it depends on (its config section, the presets that section names, and
the fingerprint of the stage before it). On a rerun a stage whose fingerprint matches and that
finished is skipped; one that was interrupted resumes (every stage function is resumable); one
whose inputs changed stops the run with a message naming the stage and what changed, unless
`--force` is given, which redoes it and everything after it. `--from-stage S` redoes S onwards.

The run folder's layout (every path, per round) is `silkie.layout.RunLayout`'s.

Torch, transformers and the models are imported inside the stages, so a finished run is checked
without them (the stage configs' modules, and `datasets` through the schema, are imported here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from silkie import InputError
from silkie.build import DatasetConfig
from silkie.config import load, named, preset_path
from silkie.eval.suite import EvalConfig
from silkie.feedback.annotate import AnnotateConfig
from silkie.layout import RunLayout, adapter_base
from silkie.pool.generate import GenerateConfig
from silkie.sources.sampler import CollectConfig

__all__ = ["LEDGER", "STAGES", "Baseline", "PipelineConfig", "StageLedger", "Stages", "Train", "load_pipeline_config",
           "plan", "run", "stage_names"]

ROUND_STAGES = ("collect", "generate", "annotate", "dataset", "train", "eval")  # repeated by --rounds
FINAL_STAGES = ("stats", "report")
STAGES = ROUND_STAGES + FINAL_STAGES  # a one-round run
LEDGER = RunLayout(".").ledger.name


@dataclass
class Train:
    """The train stage's section: a training preset and overrides (TrainConfig is the preset's dataclass)."""
    preset: str = "mini"  # configs/train preset or YAML file
    set: dict = field(default_factory=dict)  # overrides, as `silkie train --set`


@dataclass
class Baseline:
    """A recipe trained on the same annotated data beside Silkie, e.g. "longest as best" DPO."""
    pair_policy: str = "silkie"
    set: dict = field(default_factory=dict)  # training overrides, e.g. {mode: sft}


@dataclass
class PipelineConfig:
    name: str = "mini"
    seed: int = 0
    # each section is its stage's own config (the same dataclass its command's flags come from)
    collect: CollectConfig = field(default_factory=CollectConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    train: Train = field(default_factory=Train)
    baselines: dict[str, Baseline] = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # > 1: each further round answers fresh instructions with the last round's model
    rounds: int = field(default=1, metadata={"range": (1, None)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self, where: str) -> None:
        """What names another config or a policy: checked on load, before any stage runs (so never after
        a paid annotate stage), and without importing torch."""
        from silkie.feedback.openai_judge import load_judge_config
        from silkie.pairs import parse_policy
        from silkie.pool.config import load_pool

        self.dataset.validate(f"{where}: dataset")
        for name, baseline in self.baselines.items():
            named(f"{where}: baselines.{name}.pair_policy", parse_policy, baseline.pair_policy)
        named(f"{where}: generate.pool", load_pool, self.generate.pool)
        named(f"{where}: annotate.overrides", load_judge_config, self.annotate.config, self.annotate.overrides)
        self.check_training(where)
        self.eval.validate(where)
        self.source = where  # not a field: where messages point, for the checks `run` adds

    def check_training(self, where: str, full: bool = False) -> None:
        """The training preset with each recipe's overrides (the dataset comes from the run): Silkie's own
        keys without TRL; with `full`, every DPOConfig key too, which imports TRL and so torch. `silkie run`
        makes the full check before any stage runs when a training stage is to run, so a finished run's
        rerun stays free of torch and a bad DPO key still never waits for a paid annotate stage."""
        from silkie.train.config import check_keys

        recipes = {"train.set": self.train.set, **{f"baselines.{n}.set": {**self.train.set, **b.set}
                                                   for n, b in self.baselines.items()}}
        for key, overrides in recipes.items():
            named(f"{where}: {key}", lambda o: check_keys(self.train.preset, {**o, "dataset": "-"}, full=full),
                  overrides)


def load_pipeline_config(preset: str | None = None, config: str | Path | None = None, overrides: dict | None = None
                ) -> PipelineConfig:
    """configs/pipeline/<preset>.yaml or a YAML file, with dotted-key `overrides` ({"dataset.judge_noise": 0.2}),
    every key and every config it names checked."""
    return load(PipelineConfig, "pipeline", config or preset or "mini", overrides)


def _preset(kind: str, name: str):
    """A named preset's settings, so editing them counts as a change (and editing a comment does not)."""
    import yaml

    try:
        return yaml.safe_load(preset_path(kind, name).read_text())
    except FileNotFoundError:
        return name  # e.g. a Hub id; the stage itself reports what is wrong with it


def stage_names(cfg: PipelineConfig) -> list[str]:
    """Round 1's stages, then `STAGE@R` for each further round, then stats and report."""
    later = [f"{stage}@{r}" for r in range(2, cfg.rounds + 1) for stage in ROUND_STAGES]
    return [*ROUND_STAGES, *later, *FINAL_STAGES]


def split(name: str) -> tuple[str, int]:
    """"train@2" -> ("train", 2); "train" -> ("train", 1)."""
    stage, _, r = name.partition("@")
    return stage, int(r or 1)


def stage_inputs(cfg: PipelineConfig, name: str) -> dict:
    """What a stage's output depends on, besides the stages before it."""
    stage, r = split(name)
    inputs = {"round": r} if r > 1 else {}
    if stage == "collect":
        inputs |= {"collect": dataclasses.asdict(cfg.collect), "seed": cfg.seed}
    elif stage == "generate":
        inputs |= {"generate": dataclasses.asdict(cfg.generate), "pool": _preset("pool", cfg.generate.pool),
                   "seed": cfg.seed}
    elif stage == "annotate":
        judge = _preset("judge", cfg.annotate.config) if cfg.annotate.judge != "scene" else None
        inputs |= {"annotate": dataclasses.asdict(cfg.annotate), "judge": judge, "seed": cfg.seed}
    elif stage == "dataset":
        inputs |= {"dataset": dataclasses.asdict(cfg.dataset),
                   "baselines": {k: v.pair_policy for k, v in cfg.baselines.items()} if r == 1 else {}}
    elif stage == "train":
        inputs |= {"train": dataclasses.asdict(cfg.train), "preset": _preset("train", cfg.train.preset),
                   "baselines": {k: dataclasses.asdict(v) for k, v in cfg.baselines.items()} if r == 1 else {}}
    elif stage == "eval":
        inputs |= {"eval": dataclasses.asdict(cfg.eval)}
    return inputs


def fingerprints(cfg: PipelineConfig, inputs: dict | None = None) -> dict[str, str]:
    """Each stage's fingerprint: its own inputs chained to the previous stage's fingerprint."""
    out, previous = {}, ""
    for name in stage_names(cfg):
        own = inputs[name] if inputs is not None else stage_inputs(cfg, name)
        text = json.dumps([name, own, previous], sort_keys=True, default=str)
        out[name] = previous = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def _changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, for the "inputs changed" message."""
    keys = sorted(set(old) | set(new))
    found = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _changes(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}")
    return found


class StageLedger:
    """RUN/stages.json: per stage its fingerprint, inputs, state (running/done), seconds and summary."""

    def __init__(self, run: Path):
        self.path = RunLayout(run).ledger
        self.stages = json.loads(self.path.read_text())["stages"] if self.path.is_file() else {}

    def get(self, stage: str) -> dict | None:
        return self.stages.get(stage)

    def set(self, stage: str, **entry) -> None:
        self.stages[stage] = entry
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"stages": self.stages}, indent=1) + "\n")
        os.replace(temporary, self.path)  # a kill never leaves a half-written ledger


def plan(cfg: PipelineConfig, run: Path, force: bool = False, from_stage: str | None = None) -> list[str]:
    """The stages to run, in order; raises InputError naming a stage whose inputs changed (without --force)."""
    names = stage_names(cfg)
    if from_stage is not None and from_stage not in names:
        raise InputError(f"--from-stage {from_stage!r}: this run's stages are {', '.join(names)}")
    ledger, prints = StageLedger(run), fingerprints(cfg)
    todo = []
    for name in names:
        entry = ledger.get(name)
        redo = from_stage is not None and names.index(name) >= names.index(from_stage)
        if entry is None or redo or todo:  # everything after a stage that runs runs too
            todo.append(name)
        elif entry["fingerprint"] != prints[name]:
            if not force:
                what = ", ".join(_changes(entry.get("inputs", {}), stage_inputs(cfg, name))[:4]) or "an earlier stage"
                raise InputError(f"stage {name!r} of {run} was run with other inputs ({what} changed); "
                                 f"rerun with --force to redo it and the stages after it, or use another --out")
            todo.append(name)
        elif entry["state"] != "done":
            todo.append(name)  # interrupted: resume it
    return todo


def run(cfg: PipelineConfig, out: str | Path, force: bool = False, from_stage: str | None = None,
        until: str | None = None, log=print) -> Path:
    """Run (or resume, or skip) every stage of `cfg` into `out`, or those up to `until`; returns the
    report's path."""
    import yaml

    layout = RunLayout(out)
    run_dir = layout.root
    if until is not None and until not in stage_names(cfg):
        raise InputError(f"--until {until!r}: this run's stages are {', '.join(stage_names(cfg))}")
    todo = plan(cfg, run_dir, force, from_stage)
    if not todo:
        log(f"{run_dir}: every stage is up to date; nothing to do (report: {layout.report})")
        return layout.report
    if any(split(name)[0] == "train" for name in todo):
        cfg.check_training(getattr(cfg, "source", f"pipeline {cfg.name!r}"), full=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    # read once: a preset edited while the run goes on must not mix old and new in the ledger
    inputs = {name: stage_inputs(cfg, name) for name in stage_names(cfg)}
    ledger, prints = StageLedger(run_dir), fingerprints(cfg, inputs)
    stages = Stages(cfg, layout, log)
    for name in stage_names(cfg):
        if name not in todo:
            log(f"[{name}] up to date")
            continue
        entry = ledger.get(name)
        # redone with other inputs, or again: start clean; never run here: reuse what is there (e.g. a
        # training launched by hand with `accelerate launch`), as every stage resumes
        redo = entry is not None and (entry["fingerprint"] != prints[name] or entry["state"] == "done")
        if redo:
            stages.clear(name)
        log(f"[{name}] {'starting' if entry is None or redo else 'resuming'}")
        ledger.set(name, fingerprint=prints[name], inputs=inputs[name], state="running")
        start = time.perf_counter()
        stage, r = split(name)
        summary = getattr(stages, stage)(r)
        seconds = round(time.perf_counter() - start, 1)
        ledger.set(name, fingerprint=prints[name], inputs=inputs[name], state="done",
                   seconds=seconds, summary=summary)
        log(f"[{name}] done in {seconds:.0f} s")
        if name == until:
            log(f"stopped after {name} (--until); rerun without it to go on")
            break
    return layout.report


class Stages:
    """One method per stage, taking the round: calls the stage's `run(cfg, run_dir)` with what the round
    adds, and returns its JSON summary for the ledger.

    Round 1 works in RUN itself; round R > 1 in RUN/round-R, where the pool's base member is replaced
    by the model of round R-1 (merged), which is also the model that round trains and its reference.
    """

    def __init__(self, cfg: PipelineConfig, run: RunLayout | str | Path, log):
        self.cfg, self.log = cfg, log
        self.run = run if isinstance(run, RunLayout) else RunLayout(run)

    def folder(self, r: int) -> RunLayout:
        return self.run.round_(r)

    def clear(self, name: str) -> None:
        stage, r = split(name)
        patterns = RunLayout.OUTPUTS.get(stage) or \
            (("eval",) if r == 1 else (f"eval/round-{r}", f"eval/round-{r}-vs-base"))
        root = self.run.root if stage == "eval" else self.folder(r).root
        for pattern in patterns:
            for path in root.glob(pattern):
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def collect(self, r: int) -> dict:
        from silkie.sources import sampler

        # fresh instructions each round: the sampler's seed moves on
        return sampler.run(self.cfg.collect, self.folder(r).root, seed=self.cfg.seed + r - 1, log=self.log)

    def _pool(self, r: int):
        from silkie.pool.config import load_pool

        pool = load_pool(self.cfg.generate.pool)
        if r == 1:
            return pool
        base = self._train_config(1).model
        member = next((m for m in pool.models if m.model == base and m.adapter is None), None)
        if member is None:
            raise InputError(f"--rounds: pool {pool.name!r} has no member running the base model {base!r}, "
                             "whose answers the later rounds replace with the trained model's")
        member.name, member.model = f"{member.name}-round-{r - 1}", str(self.policy(r))
        return pool

    def generate(self, r: int) -> dict:
        from silkie.pool import generate

        return generate.run(self.cfg.generate, self.folder(r).root, seed=self.cfg.seed, pool=self._pool(r),
                            log=self.log)

    def annotate(self, r: int) -> dict:
        from silkie.feedback import annotate

        return annotate.run(self.cfg.annotate, self.folder(r).root, seed=self.cfg.seed, log=self.log)

    def dataset(self, r: int) -> dict:
        from silkie import build

        folder = self.folder(r)
        summary = {"silkie": build.run(self.cfg.dataset, folder.root, log=self.log)}
        for name in self.cfg.baselines if r == 1 else ():
            policy = self.cfg.baselines[name].pair_policy
            if policy != self.cfg.dataset.pair_policy:  # a baseline with Silkie's policy shares its pairs
                own = dataclasses.replace(self.cfg.dataset, pair_policy=policy)
                summary[name] = build.run(own, folder.root, out=folder.baseline(name) / "vlfeedback", log=self.log)
        return summary

    def _train_config(self, r: int, **overrides):
        from silkie.train import load_train_config as train_config

        model = {"model": str(self.policy(r))} if r > 1 else {}
        return train_config(preset=self.cfg.train.preset, overrides={**self.cfg.train.set, **model, **overrides})

    def _train_one(self, r: int, out: Path, dataset: Path, overrides: dict) -> dict:
        from silkie.train import recipe

        return recipe.run(self._train_config(r, **overrides, dataset=str(dataset), output_dir=str(out)), log=self.log)

    def train(self, r: int) -> dict:
        folder = self.folder(r)
        summary = {"silkie": self._train_one(r, folder.train, folder.dataset, {})}
        for name in self.cfg.baselines if r == 1 else ():
            baseline = self.cfg.baselines[name]
            data = folder.dataset
            if baseline.pair_policy != self.cfg.dataset.pair_policy:  # its own pairs, or nothing
                data = folder.baseline(name) / "vlfeedback"
                if not data.is_dir():
                    raise InputError(f"baseline {name!r} ({baseline.pair_policy} pairs): its dataset {data} is "
                                     "missing; rerun with --from-stage dataset to build it")
            summary[name] = self._train_one(r, folder.baseline(name) / "train", data, baseline.set)
        return {name: {k: s.get(k) for k in ("global_step", "train_seconds", "rows", "mode", "base_model")}
                for name, s in summary.items()}

    def policy(self, r: int) -> Path:
        """The model round `r` starts from (r > 1): round r-1's base with its adapter merged in, made once."""
        from silkie.train.export import export

        previous = self.folder(r - 1)
        merged = previous.merged
        if not (merged / "config.json").is_file():
            export(previous.adapter, merged, merge=True)
        return merged

    def eval(self, r: int) -> dict:
        from silkie.eval import suite

        run = self.run
        base = adapter_base(run.adapter)
        if r == 1:  # the base, Silkie and each baseline, all LoRA adapters on the base
            models = {"base": (base, None), "trained": (base, run.adapter),
                      **{name: (base, run.baseline(name) / "train" / "adapter") for name in self.cfg.baselines}}
        else:  # the base's answers are already there from round 1
            models = {f"round-{r}": (str(self.policy(r)), self.folder(r).adapter)}
        summary = suite.run(self.cfg.eval, run.root, models, log=self.log)
        if "mini" in self.cfg.eval.benchmarks:  # items shared with this run's training instructions
            summary["overlap_with_run"] = _mini_overlap(run.root, self.cfg.eval.benchmarks["mini"] or {})
        return summary

    def stats(self, r: int) -> dict:
        from silkie import stats

        return stats.run(self.run.root, log=self.log)

    def report(self, r: int) -> dict:
        from silkie import report

        return report.run(self.cfg, self.run.root, StageLedger(self.run.root).stages, log=self.log)


def _mini_overlap(run: Path, options: dict) -> int:
    from silkie.eval.mini import shared_with

    return shared_with(sorted(run.glob("instructions.jsonl")) + sorted(run.glob("round-*/instructions.jsonl")),
                       **{k: v for k, v in options.items() if k in ("n", "n_mmhal", "seed")})

