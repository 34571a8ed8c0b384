"""The Silkie recipe: TRL's DPOTrainer + a PEFT LoRA adapter on the language model only, reading the
`pairs` config of a VLFeedback dataset, with a reference log-prob cache TRL does not offer for
vision data.

RUN/train/ (cfg.output_dir) holds: preflight.json, train_config.yaml (resolved), metrics.jsonl,
ref_cache/<key>.safetensors, checkpoint-N/ (resumable), adapter/ (the final LoRA + processor),
summary.json.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import PrinterCallback, ProgressCallback, TrainerCallback
from trl import DPOTrainer

from silkie import InputError
from silkie.train.config import TrainConfig, dpo_args

REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


class _RefCollator:
    """Wraps TRL's vision collator (which drops unknown keys) to carry cached reference log-probs."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        import torch

        refs = {k: [e.pop(k) for e in examples] for k in REF_COLUMNS if k in examples[0]}
        for e in examples:
            e.pop("id", None)
        batch = self.inner(examples)
        for key, values in refs.items():
            batch[key] = torch.tensor(values, dtype=torch.float32)
        return batch


class SilkieDPOTrainer(DPOTrainer):
    """DPOTrainer that can read reference log-probs from the dataset for vision data.

    TRL refuses `precompute_ref_log_probs` for vision datasets; we compute them ourselves (one pass,
    adapter disabled, `compute_reference`) and switch TRL's own cached-reference branch on, so the
    loss code is TRL's in both paths.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.data_collator = _RefCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(self._signature_columns) + [c for c in REF_COLUMNS
                                                                   if c not in self._signature_columns]

    def compute_reference(self, dataset, batch_size: int | None = None) -> tuple[list[float], list[float]]:
        """Reference log-probs (adapter disabled) of chosen and rejected for every row, in row order.

        Rows are split across processes and gathered, so each process pays 1/world of the pass.
        """
        import torch
        from accelerate.utils import gather_object

        batch_size = batch_size or self.args.per_device_train_batch_size
        acc = self.accelerator
        model = self.model
        if self.is_deepspeed_enabled:  # parameters not placed yet: an inference engine, as TRL does
            from trl.models.utils import prepare_deepspeed

            model = prepare_deepspeed(self.model, acc)
        columns = [c for c in ("images", "prompt", "chosen", "rejected") if c in dataset.column_names]
        view = dataset.select_columns(columns)
        mine = list(range(acc.process_index, len(view), acc.num_processes))
        results = []
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(mine), batch_size):
            indices = mine[start:start + batch_size]
            batch = self._prepare_inputs(self.data_collator.inner([view[i] for i in indices]))
            with torch.no_grad():
                chosen, rejected = self.compute_ref_log_probs(model, batch)
            results += list(zip(indices, chosen.float().cpu().tolist(), rejected.float().cpu().tolist()))
        self.model.train(was_training)
        if acc.num_processes > 1:
            results = gather_object(results)
        results.sort()
        return [c for _, c, _ in results], [r for _, _, r in results]

    def use_reference(self, dataset):
        """Train on `dataset` carrying REF_COLUMNS instead of a reference forward each step."""
        self.train_dataset = dataset
        self.precompute_ref_logps = True


class MetricsLog(TrainerCallback):
    """TRL's metrics (rewards/chosen, rejected, margins, accuracies, loss, ...) to metrics.jsonl, every
    log, and a console line per log when verbose, else about one per tenth of the run (a `silkie run`
    trains three recipes; hundreds of step lines would bury its stage lines). TensorBoard/W&B come from
    `report_to`."""

    def __init__(self, path: Path):
        self.path, self.shown_at = path, 0
        self.verbose = os.environ.get("SILKIE_VERBOSE") == "1"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), **logs}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        keys = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
        shown = " ".join(f"{k.split('/')[-1]}={logs[k]:.4g}" for k in keys if k in logs)
        due = self.verbose or state.global_step - self.shown_at >= max(1, state.max_steps // 10) \
            or state.global_step >= state.max_steps
        if shown and due:
            self.shown_at = state.global_step
            print(f"step {state.global_step}/{state.max_steps}: {shown}", flush=True)


class _StopAt(TrainerCallback):
    """Stops after a given step (tests use it to simulate a killed run)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt(f"stopped at step {state.global_step}")


def load_pairs(cfg: TrainConfig):
    from datasets import load_dataset

    try:
        dataset = load_dataset(cfg.dataset, cfg.dataset_config, split=cfg.split, revision=cfg.dataset_revision)
    except (FileNotFoundError, ValueError) as error:
        raise InputError(f"cannot load {cfg.dataset_config!r}/{cfg.split} of {cfg.dataset!r}: "
                         f"{str(error).splitlines()[0]}") from None
    missing = {"images", "prompt", "chosen", "rejected"} - set(dataset.column_names)
    if missing:
        raise InputError(f"{cfg.dataset}: not a pairs dataset (missing {', '.join(sorted(missing))})")
    if cfg.max_rows:
        dataset = dataset.select(range(min(cfg.max_rows, len(dataset))))
    return dataset


def reference_key(cfg: TrainConfig, processor, dataset_fingerprint: str) -> str:
    """What the reference log-probs depend on: base weights, processor, max length and the rows."""
    import hashlib

    from silkie.chat import resolve

    base = Path(resolve(cfg.model))
    weights = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in base.glob("*.safetensors")) \
        if base.is_dir() else []
    tokenizer = processor.tokenizer
    identity = {
        "model": cfg.model, "revision": cfg.revision, "weights": weights,
        "processor": hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest(),
        "image_processor": processor.image_processor.to_json_string(),
        "chat_template": getattr(processor, "chat_template", None), "max_length": cfg.max_length,
        "dataset": dataset_fingerprint, "mode": cfg.mode,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def attach_reference(trainer: SilkieDPOTrainer, dataset, cfg: TrainConfig, key: str, out: Path):
    """Load or compute RUN/train/ref_cache/<key>.safetensors and train from it. Returns seconds spent."""
    import torch
    from safetensors.torch import load_file, save_file

    start = time.perf_counter()
    path = out / "ref_cache" / f"{key}.safetensors"
    if path.is_file():
        cached = load_file(str(path))
        chosen, rejected = cached["chosen"].tolist(), cached["rejected"].tolist()
    elif cfg.mode == "sft":  # SFT needs no reference: zeros keep TRL's loss code path without a pass
        chosen = rejected = [0.0] * len(dataset)
    else:
        chosen, rejected = trainer.compute_reference(dataset, cfg.ref_batch_size)
        if trainer.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"chosen": torch.tensor(chosen), "rejected": torch.tensor(rejected)}, str(path),
                      metadata={"rows": str(len(dataset)), "model": cfg.model})
        trainer.accelerator.wait_for_everyone()
    if len(chosen) != len(dataset):
        raise InputError(f"reference cache {path} has {len(chosen)} rows for {len(dataset)}; delete it")
    trainer.use_reference(dataset.add_column(REF_COLUMNS[0], chosen).add_column(REF_COLUMNS[1], rejected))
    return time.perf_counter() - start


@dataclass
class TrainResult:
    output_dir: Path
    adapter: Path | None
    preflight: object
    global_step: int = 0
    metrics: dict | None = None
    reference_seconds: float = 0.0
    train_seconds: float = 0.0
    model: object = None  # the trained PEFT model (in memory)

    def summary(self) -> str:
        if self.adapter is None:
            return "\n".join(self.preflight.lines()) + "\npre-flight passed; nothing trained (--preflight)"
        return (f"trained {self.global_step} steps in {self.train_seconds:.0f}s; adapter in {self.adapter}; "
                f"metrics in {self.output_dir / 'metrics.jsonl'}")


def run(cfg: TrainConfig, run_dir: str | Path | None = None, log=print) -> dict:
    """The stage: train `cfg` into `run_dir`'s train/ folder (default: the config's output_dir), resuming
    from its last checkpoint, or keep what a finished training left there; returns its summary.json."""
    if run_dir is not None:
        from silkie.layout import RunLayout

        cfg.output_dir = str(RunLayout(run_dir).train)
    out = Path(cfg.output_dir)
    if (out / "summary.json").is_file() and (out / "adapter" / "adapter_config.json").is_file():
        return json.loads((out / "summary.json").read_text())  # finished before an interruption
    log(train(cfg, resume=True).summary())
    return json.loads((out / "summary.json").read_text())


def train(cfg: TrainConfig, resume: bool = False, preflight_only: bool = False, callbacks=(),
          model=None, processor=None) -> TrainResult:
    """Pre-flight, then DPO (or SFT) with LoRA on the language model; writes RUN/train/ (see module doc)."""
    import yaml
    from transformers.trainer_utils import get_last_checkpoint

    from silkie.chat import load_for_training
    from silkie.train.lora import lora_config, resolve_lora_targets
    from silkie.train.preflight import preflight

    cfg.check()
    args = dpo_args(cfg)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    main_process = int(os.environ.get("RANK", "0")) == 0
    dataset = load_pairs(cfg)
    if model is None:
        model, processor = load_for_training(cfg.model, cfg.revision, args.bf16, args.trust_remote_code)
    targets = resolve_lora_targets(model, cfg.lora_target_modules)
    report = preflight(model, processor, dataset, cfg, targets)
    if main_process:
        report.save(out / "preflight.json")
        print("\n".join(report.lines()), flush=True)
    if report.problems:
        raise InputError(f"pre-flight: {report.problems[0]}"
                         + (f" (and {len(report.problems) - 1} more in {out / 'preflight.json'})"
                            if len(report.problems) > 1 else ""))
    if preflight_only:
        return TrainResult(out, None, report)
    if main_process:
        (out / "train_config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    rows = dataset.select(report.kept) if len(report.kept) < len(dataset) else dataset
    trainer = SilkieDPOTrainer(
        model=model, args=args, train_dataset=rows, processing_class=processor,
        peft_config=lora_config(targets, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout),
        callbacks=[MetricsLog(out / "metrics.jsonl"), *callbacks])
    if os.environ.get("SILKIE_VERBOSE") != "1":  # silkie.quiet: MetricsLog's line, not the Trainer's raw dicts
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
    reference_seconds = 0.0
    if cfg.ref_cache or cfg.mode == "sft":
        import hashlib

        fingerprint = hashlib.sha256(f"{dataset._fingerprint}:{report.kept}".encode()).hexdigest()
        reference_seconds = attach_reference(trainer, rows, cfg, reference_key(cfg, processor, fingerprint), out)
    checkpoint = get_last_checkpoint(str(out)) if resume and out.is_dir() else None
    if resume and main_process:
        print(f"resuming from {checkpoint}" if checkpoint else f"no checkpoint in {out}: starting afresh", flush=True)
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    if main_process:
        processor.save_pretrained(str(adapter))
        summary = {"global_step": trainer.state.global_step, "train_seconds": seconds,
                   "reference_seconds": reference_seconds, "rows": len(rows), "dropped_too_long": len(report.too_long),
                   "metrics": output.metrics, "base_model": cfg.model, "dataset": cfg.dataset, "mode": cfg.mode}
        (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return TrainResult(out, adapter, report, trainer.state.global_step, output.metrics, reference_seconds, seconds,
                       trainer.model)
