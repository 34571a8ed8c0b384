"""The Hub side: dataset and model cards rendered from cards/, uploads, and downloads.

Cards are generated from the data (counts, statistics, provenance), never filled in by hand.
Tokens come from the environment (HF_TOKEN) through huggingface_hub and are never written.
"""

from __future__ import annotations

import json
from pathlib import Path

from silkie.config import RESOURCES
from silkie.schema import ASPECTS

LICENSE = "cc-by-nc-4.0"
CITATION = """@article{li2023silkie,
  title={Silkie: Preference Distillation for Large Visual Language Models},
  author={Li, Lei and Xie, Zhihui and Li, Mukai and Chen, Shunian and Wang, Peiyi and Chen, Liang and
          Yang, Yazheng and Wang, Benyou and Kong, Lingpeng},
  journal={arXiv preprint arXiv:2312.10665},
  year={2023}
}"""


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _provenance(settings: dict, stats: dict) -> str:
    judge = settings.get("judge") or {}
    if settings.get("run_dir"):
        origin = "Built from a Silkie run folder (collect → generate → annotate)."
    else:
        origin = "Built from the VLFeedback release files (`vlfeedback_80k.jsonl` and its images)."
    sources = ", ".join(f"{name} ({n})" for name, n in stats["sources"].items())
    models = ", ".join(f"{name} ({n})" for name, n in stats["models"].items())
    lines = [origin, "", f"- Instruction sources (rows): {sources}.", f"- Models (responses): {models}."]
    if judge:
        lines.append(f"- Judge: {judge.get('name')}, prompt version {judge.get('prompt_version')}.")
    lines.append(f"- Pair policy: `{settings.get('pair_policy', 'silkie')}`"
                 + (f", aspect weights {settings['weights']}" if settings.get("weights") else "")
                 + (", ratings outside 1-5 excluded" if settings.get("strict_ratings") else "") + ".")
    return "\n".join(lines)


def run_judge(run_dir: str | Path) -> dict:
    """The judge named by a run's first annotation (every annotation of a run shares it)."""
    from silkie.io import read_jsonl

    path = Path(run_dir) / "annotations.jsonl"
    for _, record in read_jsonl(path) if path.exists() else []:
        if isinstance(record, dict) and isinstance(record.get("judge"), dict):
            return {k: record["judge"].get(k) for k in ("name", "prompt_version")}
    return {}


def write_dataset_card(out: Path, settings: dict, repo: str | None = None) -> Path:
    """README.md of a built folder, rendered from the files the build left there: card_stats.json (rows,
    sources, models, pairs), ratings.json (the rating summary, silkie/ratings.py) and build_report.json."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from silkie.ratings import load

    saved = json.loads((out / "card_stats.json").read_text())
    stats, summary, ratings = saved["statistics"], saved["pairs"] or {}, load(out / "ratings.json")
    flagged = json.loads((out / "build_report.json").read_text())["counts"]
    settings = {**settings, "judge": run_judge(settings["run_dir"]) if settings.get("run_dir") else {}}
    pair_counts = {split: _parquet_rows(out / "data" / "pairs", split) for split in ("train", "test")}
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/default/train-*"}]},
               {"config_name": "pairs", "data_files": [{"split": s, "path": f"data/pairs/{s}-*"} for s in
                                                       ("train", "test")]}]
    data = DatasetCardData(
        license=LICENSE, language=["en"], pretty_name="VLFeedback", size_categories=_size_category(stats["rows"]),
        task_categories=["image-text-to-text", "visual-question-answering"],
        tags=["vlfeedback", "silkie", "ai-feedback", "preference", "dpo", "multimodal"],
        source_datasets=sorted(stats["sources"]), configs=configs, dataset_info=_dataset_info(out))
    shares = [[aspect, *(f"{100 * a['shares'][k]:.1f}%" for k in a["shares"]), a["missing"], a["invalid"]]
              for aspect, a in ratings["aspects"].items()]
    means = [[model, *(_two(v["aspects"][a]["mean"]) for a in ASPECTS)] for model, v in ratings["models"].items()]
    card = DatasetCard.from_template(
        data, template_path=str(RESOURCES / "cards" / "dataset_card.md"),
        pretty_name="VLFeedback", per_row=round(ratings["responses"] / max(stats["rows"], 1)),
        pair_policy=settings.get("pair_policy", "silkie"), judge_noise=settings.get("judge_noise") or 0,
        provenance=_provenance(settings, stats), rows=stats["rows"], pairs=sum(pair_counts.values()),
        pairs_train=pair_counts["train"], pairs_test=pair_counts["test"],
        rating_table=_table(["aspect", "1", "2", "3", "4", "5", "missing", "invalid"], shares),
        model_table=_table(["model", *ASPECTS], means),
        length_ratio=summary.get("chosen_rejected_length_ratio"), mean_margin=summary.get("mean_margin"),
        win_rates=", ".join(f"{m} {r:.0%}" for m, r in summary.get("win_rate", {}).items()) or "none",
        flagged=", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(flagged.items()) if k != "rows") or "none",
        repo=repo or "ORG/VLFeedback", judge=settings["judge"].get("name"), citation=CITATION)
    path = out / "README.md"
    card.save(path)
    return path


def _two(mean: float | None) -> float | None:
    """A mean as the card shows it, to two places (the summary keeps three)."""
    return None if mean is None else round(mean, 2)


def _dataset_info(out: Path) -> list[dict]:
    """Features and split sizes per config, as Hub cards declare them. `datasets` caches a local
    folder under a hash of this YAML, so the sizes also keep two different builds from sharing a cache."""
    import datasets

    from silkie.schema import FEATURES

    infos = []
    for config in ("default", "pairs"):
        folder = out / "data" / config
        splits = [{"name": split, "num_bytes": sum(p.stat().st_size for p in folder.glob(f"{split}-*.parquet")),
                   "num_examples": _parquet_rows(folder, split)}
                  for split in ("train", "test") if any(folder.glob(f"{split}-*.parquet"))]
        size = sum(split["num_bytes"] for split in splits)
        infos.append({"config_name": config, **datasets.DatasetInfo(features=FEATURES[config])._to_yaml_dict(),
                      "splits": splits, "download_size": size, "dataset_size": size})
    return infos


def _parquet_rows(folder: Path, split: str) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob(f"{split}-*.parquet"))


def push_folder(folder: str | Path, repo_id: str, repo_type: str = "dataset", private: bool = False) -> str:
    """Create the repo if needed and upload the folder; rerunning it skips files already there
    (upload_folder commits in batches and resumes)."""
    from huggingface_hub import HfApi

    api = HfApi()  # the token comes from HF_TOKEN or the login cache, never from us
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type)
    return f"uploaded {folder} to {url}"


def write_model_card(out: Path, info: dict, repo: str | None = None) -> Path:
    """README.md of an exported model from its training record.

    `info`: base_model, datasets (list), config (the resolved TrainConfig dict), summary (summary.json),
    targets (LoRA regex), merged (bool), pair_policy, eval_results ({benchmark: {metric: value}}), which
    become the card's model-index when present.
    """
    import yaml
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    cfg, summary = info.get("config") or {}, info.get("summary") or {}
    evals = info.get("eval_results") or {}
    name = (repo or out.name).split("/")[-1]
    results = [EvalResult(task_type="image-text-to-text", dataset_type=bench, dataset_name=bench,
                          metric_type=metric, metric_value=value)
               for bench, metrics in evals.items() for metric, value in metrics.items()
               if isinstance(value, (int, float))]
    base = info.get("base_model") or cfg.get("model")
    hub_base = base if base and "/" in base and not Path(base).exists() else None
    data = ModelCardData(
        license=LICENSE, language=["en"], library_name="transformers" if info.get("merged") else "peft",
        base_model=hub_base, datasets=[d for d in info.get("datasets") or [] if d and not Path(d).exists()] or None,
        pipeline_tag="image-text-to-text", tags=["silkie", "vlfeedback", "dpo", "lora", "trl", "ai-feedback"],
        model_name=name, eval_results=results or None)
    method = "SFT on the chosen answers" if cfg.get("mode") == "sft" else "DPO"
    loss = " + ".join(f"{w}·{t}" for t, w in zip(cfg.get("loss_type") or [], cfg.get("loss_weights") or
                                                  [1.0] * len(cfg.get("loss_type") or [])))
    table = _table(["benchmark", "metric", "value"], [[b, m, v] for b, ms in evals.items() for m, v in ms.items()]) \
        if evals else "No evaluation results were recorded with this export."
    global_batch = cfg.get("global_batch_size") or cfg.get("per_device_train_batch_size")
    card = ModelCard.from_template(
        data, template_path=str(RESOURCES / "cards" / "model_card.md"), model_name=name, base_model=base,
        what="The LoRA adapter is merged into the weights." if info.get("merged") else
        "This repository holds the LoRA adapter; `silkie.chat.load` applies it to the base model.",
        method=method, datasets=", ".join(f"`{d}`" for d in info.get("datasets") or []) or "a VLFeedback dataset",
        repo=repo or str(out), pair_policy=info.get("pair_policy") or "silkie", rows=summary.get("rows", "?"),
        dropped=summary.get("dropped_too_long"), loss=loss or "sigmoid", beta=cfg.get("beta"),
        lora_r=cfg.get("lora_r"), lora_alpha=cfg.get("lora_alpha"), lora_dropout=cfg.get("lora_dropout"),
        targets=info.get("targets"), learning_rate=cfg.get("learning_rate"), scheduler=cfg.get("lr_scheduler_type"),
        warmup=cfg.get("warmup_ratio"), weight_decay=cfg.get("weight_decay"), adam_beta2=cfg.get("adam_beta2"),
        epochs=cfg.get("num_train_epochs"), global_batch=global_batch, max_length=cfg.get("max_length"),
        steps=summary.get("global_step", "?"), config_yaml=yaml.safe_dump(cfg, sort_keys=False).strip(),
        eval_table=table, license=f"License: {LICENSE} (as the VLFeedback data); the base model's license also "
        "applies", citation=CITATION)
    path = out / "README.md"
    card.save(path)
    return path
