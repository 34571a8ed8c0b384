"""The training configuration: Silkie's own keys in one dataclass, every DPO and Trainer key from TRL's
`DPOConfig` itself, as TRL's scripts split them (`TrlParser((ScriptArguments, DPOConfig, ModelConfig))`).

A preset (configs/train/NAME.yaml) stays flat: a key of `SilkieArguments` goes there, any other must be a
field of `DPOConfig` (which extends transformers' `TrainingArguments`), else the file and key are named.
`dpo_args` hands every DPOConfig key as written to TRL and decides only what depends on the machine
or on Silkie's recipe (each with its reason), so no TRL key is restated or copied by hand.

Two checks, because importing TRL imports torch, and `silkie run` checks its config on load without it:
- `check_keys(preset, overrides)` (or `cfg.check(full=False)`): Silkie's keys, their types and bounds;
  no TRL, no torch.
- `cfg.check()` (or `check_keys(preset, overrides, full=True)`): also every other key against
  `DPOConfig`'s fields and types, then DPOConfig's own `__post_init__` on the values TRL would receive.
  Imports TRL; `train` runs it before it loads anything.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from silkie import InputError, one_line

MODES = ("dpo", "sft")
# The recipe keys the model card shows (silkie/hub.py); recorded in train_config.yaml with TRL's
# default when the preset leaves them out, so the card never shows a blank.
RECORDED = ("output_dir", "beta", "loss_type", "loss_weights", "learning_rate", "lr_scheduler_type",
            "weight_decay", "adam_beta2", "num_train_epochs", "max_steps", "per_device_train_batch_size",
            "max_length", "seed")


@dataclass
class SilkieArguments:
    """What Silkie adds to TRL's DPOConfig: the data, the base model, LoRA, the batch kept across GPU
    counts, the reference cache and the pre-flight."""

    model: str = field(default="Qwen/Qwen2-VL-7B-Instruct",
                       metadata={"help": "base model: a path, a Hub id or world:NAME (the shipped mini pool)"})
    revision: str | None = field(default=None, metadata={"help": "base model revision (branch, tag or commit)"})
    dataset: str | None = field(default=None, metadata={
        "help": "a built VLFeedback folder or Hub id; its `pairs` config is read"})
    dataset_config: str = field(default="pairs", metadata={"help": "the dataset config holding the pairs"})
    dataset_revision: str | None = field(default=None, metadata={"help": "dataset revision on the Hub"})
    split: str = field(default="train", metadata={"help": "the split to train on"})
    max_rows: int | None = field(default=None, metadata={"help": "first N pairs only (smoke runs)",
                                                         "range": (1, None)})
    mode: str = field(default="dpo", metadata={
        "help": "dpo: preference pairs; sft: NLL on the chosen answers (the paper's SFT baseline)",
        "choices": MODES})
    # LoRA on the language model only
    lora_r: int = field(default=64, metadata={"help": "LoRA rank", "range": (1, None)})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha", "range": (1, None)})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout", "range": (0, 1)})
    lora_target_modules: str | None = field(default=None, metadata={
        "help": "a regex over module paths; default: every Linear of the language model (vision frozen)"})
    # transformers 5 dropped TrainingArguments.warmup_ratio; its warmup_steps takes a share when below 1
    warmup_ratio: float | None = field(default=0.1, metadata={
        "help": "share of the steps spent warming up (the paper: 0.1); passed to TRL as warmup_steps. "
                "Setting warmup_steps alone (a number of steps) clears it", "range": (0, 1)})
    global_batch_size: int | None = field(default=256, metadata={
        "help": "kept whatever the GPU count: gradient accumulation = global / (per-device batch x WORLD_SIZE); "
                "an explicit gradient_accumulation_steps wins", "range": (1, None)})
    # reference log-prob cache (RUN/train/ref_cache/)
    ref_cache: bool = field(default=True, metadata={
        "help": "compute the reference log-probs once (adapter disabled) and reuse them; --set ref_cache=false: "
                "a reference forward every step"})
    ref_batch_size: int | None = field(default=None, metadata={
        "help": "batch of the reference pass (default: the training batch, so it never peaks above a step)",
        "range": (1, None)})
    # pre-flight
    preflight_rows: int = field(default=64, metadata={"help": "rows the pre-flight renders through the model",
                                                      "range": (1, None)})
    max_memory_gb: float | None = field(default=None, metadata={
        "help": "stop when the pre-flight's peak-memory estimate per device exceeds it", "range": (0, None)})


OURS = tuple(f.name for f in dataclasses.fields(SilkieArguments))


class TrainConfig:
    """One training run: `silkie` (SilkieArguments) and `dpo`, the DPOConfig keys as the preset, the flags
    and `--set` wrote them. Every key reads as an attribute (`cfg.lora_r`, `cfg.beta`); a DPOConfig key
    left out reads as TRL's default (which imports TRL)."""

    def __init__(self, silkie: SilkieArguments, dpo: dict, where: str = "train config"):
        object.__setattr__(self, "silkie", silkie)
        object.__setattr__(self, "dpo", dict(dpo))
        object.__setattr__(self, "where", where)

    def __getattr__(self, name: str):
        if name in ("silkie", "dpo", "where") or name.startswith("_"):  # not set yet (copy, pickle)
            raise AttributeError(name)
        if name in OURS:
            return getattr(self.silkie, name)
        if name in self.dpo:
            return self.dpo[name]
        if name not in dpo_fields():
            raise AttributeError(f"{type(self).__name__} has no key {name!r}")
        return dpo_default(name)

    def __setattr__(self, name: str, value) -> None:
        if name in ("silkie", "dpo", "where"):
            object.__setattr__(self, name, value)
        elif name in OURS:
            setattr(self.silkie, name, value)
        else:
            self.dpo[name] = value

    def __repr__(self) -> str:
        return f"TrainConfig({self.where}: {self.silkie}, dpo={self.dpo})"

    @property
    def checkpointing(self) -> bool:
        """Whether the recipe asks for activation (gradient) checkpointing; transformers 5 renamed
        `gradient_checkpointing` (TRL's default: on) to `activation_checkpointing`, the new name wins."""
        wanted = self.dpo.get("activation_checkpointing")
        return bool(self.gradient_checkpointing if wanted is None else wanted)

    def check(self, full: bool = True) -> TrainConfig:
        """Cross-key rules; with `full`, every other key against TRL's DPOConfig and its own checks."""
        if not self.dataset:
            raise InputError(f"{self.where}: no dataset (give --dataset DIR|HUB_ID)")
        if self.warmup_ratio is not None and self.warmup_ratio >= 1:  # 1 or more is a number of steps to TRL
            raise InputError(f"{self.where}: warmup_ratio is a share of the steps, below 1; for a number of "
                             f"steps set warmup_steps")
        if not full:
            return self
        from silkie.config import from_dict

        known = dpo_fields()
        for name in self.dpo:
            if name not in known:
                raise InputError(f"{self.where}: unknown key {name!r}: neither Silkie's (see SilkieArguments) nor a "
                                 "field of TRL's DPOConfig (`silkie train --help` lists both)")
        from_dict(_dpo_types(), self.dpo, self.where)  # types and choices, named by key
        # ours: rows longer are dropped in the pre-flight (TRL gets max_length=None), so a number is needed
        if not isinstance(self.max_length, int) or self.max_length < 16:
            raise InputError(f"{self.where}: max_length must be a number of tokens, at least 16 "
                             "(longer rows are dropped, never truncated)")
        try:
            dpo_args(self)  # DPOConfig's own __post_init__ checks the values TRL would receive
        except (ValueError, TypeError) as error:
            raise InputError(f"{self.where}: {one_line(error)}") from None
        return self

    def accumulation(self, world_size: int | None = None) -> int:
        """Gradient accumulation that keeps `global_batch_size` for this many processes."""
        if self.dpo.get("gradient_accumulation_steps"):
            return self.dpo["gradient_accumulation_steps"]
        if not self.global_batch_size:
            return self.gradient_accumulation_steps
        world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
        per_step = self.per_device_train_batch_size * world
        if self.global_batch_size % per_step:
            raise InputError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                             f"per_device_train_batch_size {self.per_device_train_batch_size} x {world} processes")
        return self.global_batch_size // per_step

    def to_dict(self) -> dict:
        """The resolved recipe, flat, as a preset writes it (it loads back with --config): Silkie's keys,
        then the DPOConfig keys written, then the card's recipe keys (RECORDED) at TRL's default."""
        recorded = {name: getattr(self, name) for name in RECORDED if name not in self.dpo}
        return {**dataclasses.asdict(self.silkie), **self.dpo, **recorded}


def dpo_args(cfg: TrainConfig, **extra):
    """TRL's DPOConfig: every DPOConfig key the preset, flags and --set wrote, as written, plus what only
    this machine or Silkie's recipe can decide (each below, with why). Nothing else is set here."""
    import torch
    from trl import DPOConfig

    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # bf16 and recomputation are GPU savings: a CPU has no fast bf16 and recomputing buys it nothing;
    # use_cpu tells transformers not to look for an accelerator. The new name is set with the old, so
    # transformers 5 warns of no deprecated `gradient_checkpointing`.
    checkpointing = cfg.checkpointing and cuda
    decided = dict(
        # the global batch stays global_batch_size whatever the number of processes (WORLD_SIZE)
        gradient_accumulation_steps=cfg.accumulation(world),
        bf16=bool((not cfg.fp16) if cfg.bf16 is None else cfg.bf16) and cuda,  # TRL: unset means on, unless fp16
        use_cpu=not cuda,
        activation_checkpointing=checkpointing, gradient_checkpointing=checkpointing,
        # rows are measured and over-long ones dropped in the pre-flight: TRL's truncation could cut
        # through image tokens ("Image features and image tokens do not match")
        max_length=None,
        report_to=cfg.report_to or "none",  # empty or null: no integration (None would reach TRL as [None])
        # one line per logged step comes from MetricsLog; tqdm bars of several processes interleave
        disable_tqdm=True,
    )
    if cfg.data_seed is None:  # accelerate's seedable sampler would take torch's last seed: the order follows seed
        decided["data_seed"] = cfg.seed
    if cfg.warmup_ratio is not None:  # transformers 5 has no warmup_ratio: warmup_steps below 1 is a share
        decided["warmup_steps"] = cfg.warmup_ratio
    if world > 1 and not cuda:  # NCCL needs GPUs: data parallel on CPUs goes through gloo
        decided["ddp_backend"] = "gloo"
    if cfg.mode == "sft":  # the paper's SFT baseline: NLL on the chosen answers only, in TRL's loss code
        decided.update(loss_type=["sft"], loss_weights=None)
    return DPOConfig(**{**cfg.dpo, **decided, **extra})


@functools.cache
def dpo_fields() -> dict:
    """TRL's DPOConfig fields by name (imports TRL, so torch)."""
    from trl import DPOConfig

    return {f.name: f for f in dataclasses.fields(DPOConfig) if f.init}


def dpo_default(name: str):
    f = dpo_fields()[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _dpo_types():
    """DPOConfig's keys as a plain dataclass (every key optional, no __post_init__), so silkie.config's
    from_dict names a mistyped key or a value outside a field's choices as it does for every config."""
    import typing

    from trl import DPOConfig

    hints = typing.get_type_hints(DPOConfig)
    return dataclasses.make_dataclass("DPOConfigKeys", [
        (name, hints[name], field(default=None, metadata={k: v for k, v in f.metadata.items() if k == "choices"}))
        for name, f in dpo_fields().items()])


def read(preset_or_path: str | Path, overrides: dict | None = None) -> tuple[dict, str]:
    """configs/train/NAME.yaml or a YAML file, with overrides applied: (the flat mapping, its path)."""
    from silkie.config import apply_overrides, read_yaml

    data, path = read_yaml("train", preset_or_path)
    overrides = {key.replace("-", "_"): value for key, value in (overrides or {}).items() if value is not None}
    for one, other in (("warmup_steps", "warmup_ratio"), ("warmup_ratio", "warmup_steps")):
        if one in overrides and other not in overrides:  # a flag for one way of warming up replaces the file's other
            data.pop(other, None)
    return apply_overrides(data, overrides), str(path)


def from_mapping(data: dict, where: str) -> TrainConfig:
    """A flat mapping -> TrainConfig: Silkie's keys checked by silkie.config's from_dict, the rest kept as
    written for DPOConfig (checked by `check()`)."""
    from silkie.config import from_dict

    ours = {key: value for key, value in data.items() if key in OURS}
    dpo = {key: value for key, value in data.items() if key not in OURS}
    if "warmup_steps" in dpo and ours.get("warmup_ratio") is not None:
        raise InputError(f"{where}: warmup_ratio and warmup_steps both set; keep one")
    if "warmup_steps" in dpo:
        ours["warmup_ratio"] = None  # a number of steps given: no share on top of it
    return TrainConfig(from_dict(SilkieArguments, ours, where), dpo, where)


def load_train_config(preset: str | None = None, config: str | Path | None = None, overrides: dict | None = None
                ) -> TrainConfig:
    """A preset name (configs/train/NAME.yaml) or a YAML file, then overrides (None values are skipped).
    Silkie's keys are checked here; `check()` checks the rest (TRL)."""
    if (preset is None) == (config is None):
        raise InputError("give exactly one of --preset NAME or --config YAML")
    return from_mapping(*read(preset or config, overrides))


def check_keys(preset_or_path: str | Path, overrides: dict | None = None, full: bool = False) -> TrainConfig:
    """A preset (or YAML file) with overrides, checked. By default without TRL or torch: the file,
    Silkie's keys, their types and bounds, the cross-key rules. With `full`, also every other key
    against DPOConfig (imports TRL, so torch): what `train` checks before it loads anything."""
    return from_mapping(*read(preset_or_path, overrides)).check(full=full)
