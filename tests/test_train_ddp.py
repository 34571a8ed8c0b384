"""Data parallel training on CPU: 2 processes (gloo) through `python -m silkie.train`, the entry point
`accelerate launch` runs; the global batch stays fixed (accumulation from WORLD_SIZE)."""

import json
import os
import subprocess
import sys

from datasets import Dataset

from silkie.schema import PAIRS_FEATURES


def test_two_process_ddp_on_cpu(tiny_model_paths, tmp_path):
    from test_train import toy_pairs

    data = tmp_path / "pairs"
    (data / "data" / "pairs").mkdir(parents=True)
    Dataset.from_list(toy_pairs(8), features=PAIRS_FEATURES).to_parquet(data / "data" / "pairs" / "train-0.parquet")
    (data / "README.md").write_text("---\nconfigs:\n- config_name: pairs\n  data_files:\n  - split: train\n"
                                    "    path: data/pairs/train-*\n---\n")
    out = tmp_path / "train"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               "-m", "silkie.train", "--preset", "mini", "--dataset", str(data),
               "--model", str(tiny_model_paths["tiny-qwen2-vl"]), "--output-dir", str(out), "--max-steps", "2",
               "--set", "per_device_train_batch_size=2", "--set", "global_batch_size=8", "--set", "logging_steps=1",
               "--set", "preflight_rows=2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 2
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([log for log in logs if "rewards/accuracies" in log]) == 2  # rank 0 writes, once per step
    # 8 pairs, global batch 8 = 2 per device x 2 processes x accumulation 2: one epoch per step
    assert logs[0]["epoch"] == 1.0 and (out / "adapter" / "adapter_model.safetensors").is_file()
