"""Training throughput: our recipe (LM-only LoRA + reference cache, cache pass counted) vs TRL stock
(all-linear LoRA, reference forward every step), same tiny Qwen2-VL, data, batch and 3 epochs.
Each variant runs in its own process so peak RSS is its own. Prints one JSON line.

    python benchmarks/train.py [--pairs 48] [--epochs 3] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_data(root: Path, n: int) -> Path:
    from datasets import Dataset
    from PIL import Image

    from silkie.schema import PAIRS_FEATURES, assistant_turn, user_turn
    from silkie.world.scenes import IMAGE_SIZE

    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200), "yellow": (200, 200, 30)}
    names = list(colours)
    rows = [{"id": f"b-{i}", "images": [Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), colours[names[i % 4]])],
             "prompt": user_turn(f"What colour is the image? ({i})"),
             "chosen": assistant_turn(f"The image is {names[i % 4]}."),
             "rejected": assistant_turn(f"The image is {names[(i + 1) % 4]} with a small circle."),
             "chosen_model": "a", "rejected_model": "b", "chosen_score": 5.0, "rejected_score": 2.0} for i in range(n)]
    (root / "data" / "pairs").mkdir(parents=True)
    Dataset.from_list(rows, features=PAIRS_FEATURES).to_parquet(root / "data" / "pairs" / "train-0.parquet")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: pairs\n  data_files:\n  - split: train\n"
                                    "    path: data/pairs/train-*\n---\n")
    return root


def run_variant(variant: str, data: str, model: str, out: str, epochs: float, batch: int) -> dict:
    from silkie.train import load_train_config as load_config

    cfg = load_config(preset="mini", overrides=dict(
        dataset=data, model=model, output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=batch,
        global_batch_size=batch, logging_steps=1000, save_steps=100000, ref_cache=variant == "ours"))
    start = time.perf_counter()
    if variant == "ours":
        from silkie.train.recipe import train

        result = train(cfg)
        steps, reference = result.global_step, result.reference_seconds
        seconds = result.train_seconds + reference  # the cache pass is counted
    else:
        from datasets import load_dataset
        from peft import LoraConfig
        from trl import DPOTrainer

        from silkie.chat import load_for_training
        from silkie.train.recipe import dpo_args

        network, processor = load_for_training(model, bf16=False)
        trainer = DPOTrainer(model=network, args=dpo_args(cfg), processing_class=processor,
                             train_dataset=load_dataset(data, "pairs", split="train"),
                             peft_config=LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                    lora_dropout=cfg.lora_dropout, target_modules="all-linear"))
        t0 = time.perf_counter()
        trainer.train()
        seconds, steps, reference = time.perf_counter() - t0, trainer.state.global_step, 0.0
    return {"seconds": seconds, "steps": steps, "reference_seconds": reference,
            "wall_with_setup": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--variant", choices=["ours", "stock"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.variant:  # a child: one variant, its figures on the last line
        figures = run_variant(args.variant, args.data, args.model, args.out, args.epochs, args.batch)
        print("RESULT " + json.dumps(figures))
        return
    from silkie.world.make import corpus
    from silkie.world.models import save_tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(save_tiny_models(tmp / "models", corpus())["tiny-qwen2-vl"])
        data = str(make_data(tmp / "data", args.pairs))
        figures = {}
        for variant in ("stock", "ours"):
            child = subprocess.run([sys.executable, __file__, "--variant", variant, "--data", data, "--model", model,
                                    "--out", str(tmp / variant), "--epochs", str(args.epochs),
                                    "--batch", str(args.batch)], capture_output=True, text=True, check=True)
            line = [x for x in child.stdout.splitlines() if x.startswith("RESULT ")][-1]
            figures[variant] = json.loads(line[len("RESULT "):])
    pairs = args.pairs * args.epochs
    ours, stock = figures["ours"], figures["stock"]
    print(json.dumps({
        "benchmark": "train", "model": "tiny-qwen2-vl", "pairs": args.pairs, "epochs": args.epochs,
        "batch": args.batch, "ours_pairs_per_s": round(pairs / ours["seconds"], 3),
        "stock_pairs_per_s": round(pairs / stock["seconds"], 3),
        "speedup": round(stock["seconds"] / ours["seconds"], 3), "goal_speedup": 1.2,
        "ours_reference_pass_s": round(ours["reference_seconds"], 2),
        "ours_peak_rss_mb": round(ours["peak_rss_mb"]), "stock_peak_rss_mb": round(stock["peak_rss_mb"]),
        "steps": [ours["steps"], stock["steps"]],
    }))


if __name__ == "__main__":
    main()
