"""Export a trained adapter for the Hub: the adapter (and optionally the merged model) with a card.

`out/` is a Hub model repo: without --merge, the LoRA adapter + processor; with --merge, the full
merged model + processor and the adapter beside it in `out/adapter/`. README.md is rendered from
cards/model_card.md with the run's train_config.yaml, summary.json, pair policy and, when present,
eval results (RUN/eval/results.json: {benchmark: {metric: value}}) as model-index.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from silkie import InputError


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def export(adapter: str | Path, out: str | Path, merge: bool = False, repo_id: str | None = None,
           eval_results: dict | None = None) -> Path:
    """Write `out` (see module doc) from a RUN/train/adapter folder. Returns `out`."""
    import yaml

    from silkie.hub import write_model_card
    from silkie.layout import adapter_base

    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter}: no adapter_config.json (expected RUN/train/adapter)")
    run_train = adapter.parent
    config = yaml.safe_load((run_train / "train_config.yaml").read_text()) \
        if (run_train / "train_config.yaml").is_file() else {}
    summary = _read_json(run_train / "summary.json")
    adapter_config = _read_json(adapter / "adapter_config.json")
    base = adapter_base(adapter)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "adapter" if merge else out
    if target.resolve() != adapter.resolve():
        shutil.copytree(adapter, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("training_args.bin", "README.md"))
    if base and "/" in base and not Path(base).exists() and not base.startswith("world:"):
        # a Hub base: the published adapter must name it, not this machine's cache path
        adapter_config["base_model_name_or_path"] = base
        (target / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    if merge:
        from silkie.chat import load

        loaded = load(adapter_config["base_model_name_or_path"] if not base.startswith("world:") else base,
                      adapter=str(adapter), dtype=None)
        merged = loaded.model.merge_and_unload()
        merged.save_pretrained(out)
        loaded.processor.tokenizer.padding_side = "left"
        loaded.processor.save_pretrained(out)
    else:
        from transformers import AutoProcessor

        if not (target / "processor_config.json").is_file() and not (target / "preprocessor_config.json").is_file():
            AutoProcessor.from_pretrained(adapter_config["base_model_name_or_path"]).save_pretrained(target)
    dataset = config.get("dataset")
    evals = eval_results or _read_json(run_train.parent / "eval" / "results.json")
    write_model_card(out, {"base_model": base, "datasets": [dataset] if dataset else [], "config": config,
                           "summary": summary, "targets": adapter_config.get("target_modules"), "merged": merge,
                           "pair_policy": _pair_policy(dataset), "eval_results": evals}, repo=repo_id)
    return out


def _pair_policy(dataset: str | None) -> str | None:
    """The pair policy a built dataset folder records in its card stats or build report, if any."""
    if not dataset or not Path(dataset).is_dir():
        return None
    for name in ("build_report.json", "card_stats.json"):
        data = _read_json(Path(dataset) / name)
        for key in ("pair_policy",):
            if key in data:
                return data[key]
            if isinstance(data.get("settings"), dict) and key in data["settings"]:
                return data["settings"][key]
    return None


def push_model(folder: str | Path, repo_id: str, private: bool = False) -> str:
    """`silkie push --model DIR --repo-id ID`: upload an exported folder as a model repo."""
    from silkie.hub import push_folder

    folder = Path(folder)
    if not (folder / "README.md").is_file() or not any((folder / f).is_file() for f in
                                                        ("adapter_config.json", "config.json")):
        raise InputError(f"{folder}: not an exported model (run `silkie export` first)")
    return push_folder(folder, repo_id, repo_type="model", private=private)
