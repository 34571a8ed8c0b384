"""Pre-flight: what training would do, checked on real rows with the real processor before any step.

Run by `silkie train --preflight` and always before training. Problems stop the run with one line;
rows longer than max_length are dropped, counted and reported (never truncated: a cut through the
image tokens fails later as "Image features and image tokens do not match").
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class PreflightReport:
    rows: int = 0
    sampled: int = 0
    kept: list[int] = field(default_factory=list)  # row indices that fit max_length
    too_long: list[str] = field(default_factory=list)  # ids of dropped rows
    longest: int = 0  # tokens (image tokens included) of the longest kept sequence
    longest_overall: int = 0
    max_length: int = 0
    image_tokens: int = 0  # per image, of the first sampled row
    chat_template: str = ""
    lora_regex: str = ""
    lora_modules: list[str] = field(default_factory=list)
    trainable: int = 0
    total: int = 0
    memory_gb: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        share = 100 * self.trainable / max(self.total, 1)
        leaves = sorted({m.rsplit(".", 1)[-1] for m in self.lora_modules})
        return [
            f"pre-flight: {self.rows} rows, {self.sampled} sampled; longest {self.longest_overall} tokens "
            f"(max_length {self.max_length}); {len(self.too_long)} over-long rows dropped, {len(self.kept)} kept",
            f"pre-flight: chat template {self.chat_template}; {self.image_tokens} tokens per image",
            f"pre-flight: LoRA on {len(self.lora_modules)} modules ({', '.join(leaves)}) matching {self.lora_regex}",
            f"pre-flight: trainable {self.trainable:,} of {self.total:,} parameters ({share:.3f}%); "
            f"peak memory estimate {self.memory_gb:.3g} GB per device",
            *[f"pre-flight problem: {p}" for p in self.problems],
        ]

    def save(self, path: Path) -> None:
        data = asdict(self)
        data["kept"] = len(self.kept)
        path.write_text(json.dumps(data, indent=1) + "\n")


def collator(processor):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:  # as DPOTrainer does
        tokenizer.pad_token = tokenizer.eos_token
    return DataCollatorForVisionPreference(processor=processor, max_length=None)


def _placeholders(messages) -> int:
    return sum(1 for m in messages for c in (m.get("content") or [])
               if isinstance(c, dict) and c.get("type") == "image")


def _image_token_id(model, processor):
    return getattr(processor, "image_token_id", None) or getattr(model.config, "image_token_id", None)


def _expected_image_tokens(processor, images) -> int | None:
    try:
        sizes = [[im.height, im.width] for im in images]
        return sum(processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens)
    except Exception:  # a processor without the helper: the placeholder count and the forward still check
        return None


def row_lengths(dataset, processor, batch_size: int = 16) -> list[int]:
    """Tokens of the longer side (chosen or rejected) of every row, image tokens included.

    Text is rendered and tokenized as TRL does, and each image counts the tokens the processor would
    expand it to (from its size alone), so no pixels are processed; processors without that helper
    go through the real collator.
    """
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    image_token = getattr(processor, "image_token", None)
    if image_token is None or not hasattr(processor, "_get_num_multimodal_tokens"):
        return _collated_lengths(dataset, processor, batch_size)
    tokenizer, lengths = processor.tokenizer, []
    columns = [c for c in ("images", "prompt", "chosen", "rejected") if c in dataset.column_names]
    for row in dataset.select_columns(columns):
        images = row.get("images") or []
        if _placeholders(row["prompt"]) != len(images):
            lengths.append(None)
            continue
        example = {"prompt": prepare_multimodal_messages(row["prompt"], images=images),
                   "chosen": prepare_multimodal_messages(row["chosen"]),
                   "rejected": prepare_multimodal_messages(row["rejected"])}
        try:
            text = apply_chat_template(example, processor)
        except (ValueError, KeyError, TypeError):  # reported by the sample checks; such a row cannot train
            lengths.append(None)
            continue
        extra = _expected_image_tokens(processor, images) - text["prompt"].count(image_token) if images else 0
        ids = tokenizer([text["prompt"], text["chosen"], text["rejected"]], add_special_tokens=False)["input_ids"]
        lengths.append(len(ids[0]) + extra + max(len(ids[1]), len(ids[2])))
    return lengths


def _collated_lengths(dataset, processor, batch_size: int) -> list[int]:
    collate, lengths = collator(processor), []
    columns = [c for c in ("images", "prompt", "chosen", "rejected") if c in dataset.column_names]
    view = dataset.select_columns(columns)
    for start in range(0, len(view), batch_size):
        rows = [view[i] for i in range(start, min(start + batch_size, len(view)))]
        mask = collate(rows)["attention_mask"].sum(dim=1)
        n = len(rows)
        lengths += [max(int(mask[i]), int(mask[n + i])) for i in range(n)]
    return lengths


def _estimate_memory_gb(model, cfg, trainable: int, longest: int) -> float:
    text = model.config.get_text_config()
    hidden, layers = text.hidden_size, text.num_hidden_layers
    dtype_bytes = next(model.parameters()).element_size()  # bf16 weights on a GPU when asked, fp32 otherwise
    weights = sum(p.numel() for p in model.parameters()) * dtype_bytes
    adapter = trainable * (4 + 4 + 8)  # fp32 weight, grad, Adam moments
    tokens = 2 * cfg.per_device_train_batch_size * longest  # chosen and rejected
    # ~34 bytes of activations per token per hidden unit per layer in half precision (Korthikanti et al.);
    # with checkpointing only the layer inputs stay, plus one layer being recomputed.
    per_layer = tokens * hidden * (34 if dtype_bytes == 2 else 68)
    activations = (tokens * hidden * dtype_bytes * layers + per_layer) if cfg.checkpointing \
        else per_layer * layers
    return (weights + adapter + activations) * 1.2 / 1e9  # 20% for the allocator, vision tower and buffers


def preflight(model, processor, dataset, cfg, targets, lengths: list[int] | None = None) -> PreflightReport:
    """Check a sample of rows, measure every row's length, and size the run. Never raises on data."""
    import random

    import torch

    report = PreflightReport(rows=len(dataset), max_length=cfg.max_length, lora_regex=targets.regex,
                             lora_modules=targets.modules)
    if len(dataset) == 0:
        report.problems.append("the dataset has no rows")
        return report
    collate = collator(processor)
    ids = dataset["id"] if "id" in dataset.column_names else [str(i) for i in range(len(dataset))]
    sample = sorted(random.Random(cfg.seed).sample(range(len(dataset)), min(cfg.preflight_rows, len(dataset))))
    report.sampled = len(sample)
    image_token = _image_token_id(model, processor)

    # chat template: present, renders the image placeholder, and prompt + answer extends the prompt
    if not getattr(processor, "chat_template", None) and not getattr(processor.tokenizer, "chat_template", None):
        report.problems.append("the processor has no chat template")
    first = dataset[sample[0]]
    try:
        from trl.data_utils import apply_chat_template, prepare_multimodal_messages

        example = copy.deepcopy({k: first[k] for k in ("prompt", "chosen", "rejected")})
        example["prompt"] = prepare_multimodal_messages(example["prompt"], images=first["images"])
        example["chosen"] = prepare_multimodal_messages(example["chosen"])
        example["rejected"] = prepare_multimodal_messages(example["rejected"])
        rendered = apply_chat_template(example, processor)
        eos = processor.tokenizer.eos_token
        ends = "ends answers with EOS" if eos and rendered["chosen"].rstrip().endswith(eos) else \
            f"does NOT end answers with EOS {eos!r} (the model may not learn to stop)"
        report.chat_template = f"renders ({ends})"
    except Exception as error:  # noqa: BLE001 - any template failure is a pre-flight problem
        report.chat_template = "fails"
        report.problems.append(f"chat template fails on row {ids[sample[0]]}: {str(error).splitlines()[0]}")

    # image placeholders against images, in the messages and in the tokens
    longest_row = None
    for i in sample:
        row = dataset[i]
        images, n_marks = row.get("images") or [], _placeholders(row["prompt"])
        if n_marks != len(images):
            report.problems.append(f"row {ids[i]}: {n_marks} image placeholders for {len(images)} images")
            continue
        try:
            batch = collate([copy.deepcopy(row)])
        except Exception as error:  # noqa: BLE001
            report.problems.append(f"row {ids[i]}: processor fails: {str(error).splitlines()[0]}")
            continue
        if image_token is not None and images:
            found = int((batch["input_ids"][0] == image_token).sum())
            expected = _expected_image_tokens(processor, images)
            if expected is not None and found != expected:
                report.problems.append(f"row {ids[i]}: {found} image tokens for {expected} image features")
            report.image_tokens = report.image_tokens or found // max(len(images), 1)
        length = int(batch["attention_mask"].sum(dim=1).max())
        if length <= cfg.max_length and (longest_row is None or length > longest_row[1]):
            longest_row = (i, length)

    # every row's length: over-long rows are dropped and reported
    lengths = lengths if lengths is not None else row_lengths(dataset, processor)
    broken = [ids[i] for i, n in enumerate(lengths) if n is None]
    if broken:
        report.problems.append(f"{len(broken)} rows whose image placeholders do not match their images or whose "
                               f"chat template fails, e.g. {broken[0]}")
    lengths = [n if n is not None else 0 for n in lengths]
    report.kept = [i for i, n in enumerate(lengths) if 0 < n <= cfg.max_length]
    report.too_long = [ids[i] for i, n in enumerate(lengths) if n > cfg.max_length]
    report.longest_overall = max(lengths)
    report.longest = max((lengths[i] for i in report.kept), default=0)
    if not report.kept:
        report.problems.append(f"no row fits max_length {cfg.max_length} (longest {report.longest_overall})")

    # one real forward on the longest sampled row: the model itself checks features against tokens
    if longest_row is not None and not report.problems:
        try:
            batch = collate([copy.deepcopy(dataset[longest_row[0]])])
            batch.pop("completion_mask")
            device = next(model.parameters()).device
            with torch.no_grad():
                model(**{k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}, use_cache=False)
        except Exception as error:  # noqa: BLE001
            report.problems.append(f"row {ids[longest_row[0]]}: the model refuses it: {str(error).splitlines()[0]}")

    report.total = sum(p.numel() for p in model.parameters())
    modules = dict(model.named_modules())
    report.trainable = sum(cfg.lora_r * (modules[m].in_features + modules[m].out_features) for m in targets.modules
                           if hasattr(modules[m], "in_features"))
    report.memory_gb = _estimate_memory_gb(model, cfg, report.trainable, report.longest)
    if cfg.max_memory_gb is not None and report.memory_gb > cfg.max_memory_gb:
        report.problems.append(f"peak memory estimate {report.memory_gb:.1f} GB exceeds max_memory_gb "
                               f"{cfg.max_memory_gb} (lower per_device_train_batch_size or max_length)")
    return report
