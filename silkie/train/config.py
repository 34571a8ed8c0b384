"""The training configuration: one dataclass, filled from a YAML preset, then from CLI overrides.

Every key is a field here; `silkie train --set key=value` (YAML-parsed value) overrides any of them,
and the named flags (--dataset, --model, ...) are shorthands for the most used keys.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from silkie import InputError

MODES = ("dpo", "sft")


@dataclass
class TrainConfig:
    # what to train on what
    model: str = "Qwen/Qwen2-VL-7B-Instruct"  # path, Hub id or world:NAME
    revision: str | None = None
    dataset: str | None = None  # a built VLFeedback folder or a Hub id; its `pairs` config is read
    dataset_config: str = "pairs"
    dataset_revision: str | None = None
    split: str = "train"
    max_rows: int | None = None  # first N pairs only (smoke runs)
    output_dir: str = "runs/silkie/train"
    mode: str = "dpo"  # dpo: preference pairs; sft: NLL on the chosen answers (the paper's SFT baseline)
    # LoRA on the language model only
    lora_r: int = 64
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str | None = None  # a regex over module paths; None: resolved from the architecture
    # the preference loss (TRL DPOConfig names)
    beta: float = 0.1
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] | None = None
    # optimisation
    learning_rate: float = 1e-5
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.05
    adam_beta2: float = 0.98
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 2
    global_batch_size: int | None = 256  # kept whatever the GPU count: accumulation = global / (batch x WORLD_SIZE)
    gradient_accumulation_steps: int | None = None  # explicit; wins over global_batch_size
    bf16: bool = True  # off automatically without a GPU
    gradient_checkpointing: bool = True
    max_length: int = 2048  # longer rows are dropped (counted), never truncated through image tokens
    # reference log-prob cache (RUN/train/ref_cache/)
    ref_cache: bool = True
    ref_batch_size: int | None = None  # None: the training batch, so the pass never peaks above a training step
    # pre-flight
    preflight_rows: int = 64
    max_memory_gb: float | None = None  # stop when the peak-memory estimate exceeds it
    # bookkeeping
    save_steps: int = 500
    save_total_limit: int | None = 2
    logging_steps: int = 10
    report_to: list[str] = field(default_factory=list)  # e.g. [tensorboard], [wandb]
    seed: int = 42
    dataloader_num_workers: int = 0
    trust_remote_code: bool = False

    def check(self) -> TrainConfig:
        if self.mode not in MODES:
            raise InputError(f"train config: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise InputError(f"train config: {len(self.loss_weights)} loss_weights for loss_type {self.loss_type}")
        if not self.dataset:
            raise InputError("train config: no dataset (give --dataset DIR|HUB_ID)")
        if self.max_length is None or self.max_length < 16:
            raise InputError("train config: max_length must be a number of tokens (rows longer are dropped)")
        return self

    def accumulation(self, world_size: int | None = None) -> int:
        """Gradient accumulation that keeps `global_batch_size` for this many processes."""
        if self.gradient_accumulation_steps:
            return self.gradient_accumulation_steps
        if not self.global_batch_size:
            return 1
        world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
        per_step = self.per_device_train_batch_size * world
        if self.global_batch_size % per_step:
            raise InputError(f"global_batch_size {self.global_batch_size} is not a multiple of "
                             f"per_device_train_batch_size {self.per_device_train_batch_size} x {world} processes")
        return self.global_batch_size // per_step

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(preset: str | None = None, config: str | Path | None = None, overrides: dict | None = None
                ) -> TrainConfig:
    """A preset name (configs/train/NAME.yaml) or a YAML file, then overrides (None values are skipped)."""
    from silkie.config import load

    if (preset is None) == (config is None):
        raise InputError("give exactly one of --preset NAME or --config YAML")
    return load(TrainConfig, "train", preset or config, overrides)
