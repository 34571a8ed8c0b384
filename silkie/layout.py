"""The run folder: every path a `silkie run` writes, named once, and which base an adapter belongs to.

    RUN/config.yaml, stages.json            the resolved config; the stage ledger
    RUN/instructions.jsonl, images/         collect (collect_skipped.jsonl: what it passed over)
    RUN/completions.jsonl, cache.sqlite     generate (completions.shard-I-of-N.jsonl when sharded)
    RUN/annotations.jsonl, judge_report.*   annotate (.md to read, .json with the rating summary; judge_config.yaml)
    RUN/vlfeedback/                         dataset: `default` + `pairs`, `load_dataset(RUN/vlfeedback)`
    RUN/baselines/NAME/{vlfeedback,train}/  a baseline's own pairs and training
    RUN/train/adapter/, train/merged/       Silkie's LoRA adapter; the base with it merged (later rounds)
    RUN/eval/{base,trained,NAME}/           answers and scores; eval/comparison.* and eval/NAME-vs-base/
    RUN/stats/, RUN/report.md               figures and tables; the report
    RUN/round-R/                            round R > 1: the same layout for collect .. train

Only the standard library and PyYAML: the layout is read by the pipeline before anything heavy loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunLayout", "adapter_base"]


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (`root`); `round_(r)` gives round r's folder for the round stages."""
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def round_(self, r: int) -> RunLayout:
        return self if r == 1 else RunLayout(self.root / f"round-{r}")

    # the run as a whole
    config = property(lambda self: self.root / "config.yaml")
    ledger = property(lambda self: self.root / "stages.json")
    stats = property(lambda self: self.root / "stats")
    report = property(lambda self: self.root / "report.md")
    eval = property(lambda self: self.root / "eval")
    # the stages of one round
    instructions = property(lambda self: self.root / "instructions.jsonl")
    images = property(lambda self: self.root / "images")
    completions = property(lambda self: self.root / "completions.jsonl")
    annotations = property(lambda self: self.root / "annotations.jsonl")
    judge_report = property(lambda self: self.root / "judge_report.md")
    dataset = property(lambda self: self.root / "vlfeedback")
    train = property(lambda self: self.root / "train")
    adapter = property(lambda self: self.root / "train" / "adapter")
    merged = property(lambda self: self.root / "train" / "merged")

    def baseline(self, name: str) -> Path:
        return self.root / "baselines" / name

    def evaluated(self, variant: str) -> Path:
        """eval/<variant>/: one model's answers and scores (base, trained, a baseline, round-R)."""
        return self.eval / variant

    def comparison(self, variant: str) -> Path:
        """Where a variant's comparison with the base goes: Silkie's in eval/, the others' beside it."""
        return self.eval if variant == "trained" else self.eval / f"{variant}-vs-base"

    # what each stage writes, relative to its round's folder: removed before the stage is redone afresh
    OUTPUTS = {"collect": ("instructions.jsonl", "images", "collect_skipped.jsonl"),
               "generate": ("completions.jsonl", "completions.shard-*", "cache.sqlite"),
               "annotate": ("annotations.jsonl", "judge_report.md", "judge_report.json", "judge_config.yaml"),
               "dataset": ("vlfeedback", "baselines/*/vlfeedback"),
               "train": ("train", "baselines/*/train"),
               "stats": ("stats",),
               "report": ("report.md",)}


def adapter_base(adapter: str | Path) -> str | None:
    """The base model a local adapter folder belongs to, as its training named it (world:NAME, a Hub id
    or a path) where the run kept its train_config.yaml beside the adapter, else as the adapter's own
    config names it; a merged model keeps its adapter in adapter/. None when the folder says nothing."""
    import yaml

    folder = Path(adapter)
    train_config = folder.parent / "train_config.yaml"
    if train_config.is_file():
        model = (yaml.safe_load(train_config.read_text()) or {}).get("model")
        if model:
            return model
    for config in (folder / "adapter_config.json", folder / "adapter" / "adapter_config.json"):
        if config.is_file():
            return json.loads(config.read_text()).get("base_model_name_or_path")
    return None
