"""`silkie run` end to end on a reduced mini world: every stage's files, the ledger, skip-when-done
without loading a model, a changed input named, --force, and a SIGKILL mid-run resumed to the same
dataset as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from silkie import InputError
from silkie.pipeline import LEDGER, load_pipeline_config, plan, run, stage_names

SMALL = {
    "name": "small", "seed": 0, "rounds": 2,
    "collect": {"sources": ["mini"], "n": 24},
    "train": {"preset": "mini", "set": {"max_steps": 4, "save_steps": 2, "preflight_rows": 8}},
    "baselines": {"longest": {"pair_policy": "longest"}},
    "eval": {"benchmarks": {"mini": {"n": 40, "n_mmhal": 8}}},
}


def write_config(folder: Path, **changes) -> Path:
    data = json.loads(json.dumps(SMALL))
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        (data.setdefault(section, {}) if section else data)[name] = value
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def silkie(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "silkie.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted reduced run (~40 s on 2 cores)."""
    root = tmp_path_factory.mktemp("pipeline")
    config = write_config(root)
    lines = []
    report = run(load_pipeline_config(config=config), root / "run", log=lines.append)
    return root, config, root / "run", report, lines


def parquet_rows(folder: Path) -> dict:
    import datasets

    return {config: datasets.load_dataset(str(folder), config, split="train").to_list()
            for config in ("default", "pairs")}


def test_every_stage_leaves_its_files(finished):
    import datasets

    _, config, run_dir, report, _ = finished
    ledger = json.loads((run_dir / LEDGER).read_text())["stages"]
    names = stage_names(load_pipeline_config(config=config))
    assert names[6:12] == ["collect@2", "generate@2", "annotate@2", "dataset@2", "train@2", "eval@2"]
    assert list(ledger) == names and all(e["state"] == "done" for e in ledger.values())
    default = datasets.load_dataset(str(run_dir / "vlfeedback"), "default", split="train")
    pairs = datasets.load_dataset(str(run_dir / "vlfeedback"), "pairs", split="train")
    assert len(default) == 24 and len(pairs) > 0
    assert (run_dir / "train" / "adapter" / "adapter_config.json").is_file()
    assert (run_dir / "baselines" / "longest" / "train" / "adapter" / "adapter_config.json").is_file()
    comparison = json.loads((run_dir / "eval" / "comparison.json").read_text())
    assert set(comparison) == {"mme", "mmhal"} and comparison["mme"]["n"] == 40
    assert (run_dir / "eval" / "longest-vs-base" / "comparison.md").is_file()
    assert list((run_dir / "stats").glob("*.png"))
    # round 2: fresh instructions, answered with the base member replaced by the round-1 model
    round_two = [json.loads(line) for line in (run_dir / "round-2" / "completions.jsonl").read_text().splitlines()]
    assert "mini-base-round-1" in {c["model"] for c in round_two} and "mini-base" not in {c["model"] for c in round_two}
    first_ids = {json.loads(line)["id"] for line in (run_dir / "instructions.jsonl").read_text().splitlines()}
    assert not first_ids & {c["id"] for c in round_two}
    assert (run_dir / "train" / "merged" / "config.json").is_file()
    assert json.loads((run_dir / "round-2" / "train" / "summary.json").read_text())["base_model"] == \
        str(run_dir / "train" / "merged")
    assert (run_dir / "eval" / "round-2-vs-base" / "comparison.json").is_file()
    text = report.read_text()
    for needle in ("## Stages", "Judge: ratings by aspect", "## Preference pairs", "**silkie** (dpo): 4 steps",
                   "### Silkie", "Baseline: longest", "Round 2", "overlap = 0 (0 with the pool", "0 with this run",
                   "## Figures and tables", "](stats/"):
        assert needle in text, needle
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["collect"]["n"] == 24 and saved["baselines"]["longest"]["pair_policy"] == "longest"


def train_split(folder: Path) -> int:
    import datasets

    return len(datasets.load_dataset(str(folder), "pairs", split="train"))


def test_a_baseline_with_its_own_policy_trains_on_its_own_pairs(finished):
    _, _, run_dir, _, _ = finished
    ledger = json.loads((run_dir / LEDGER).read_text())["stages"]
    own = run_dir / "baselines" / "longest" / "vlfeedback"
    built = ledger["dataset"]["summary"]
    assert built["longest"]["pairs"]["policy"] == "longest" and built["silkie"]["pairs"]["policy"] == "silkie"
    assert built["longest"]["pairs"]["pairs"] != built["silkie"]["pairs"]["pairs"]
    for name, folder, data in (("silkie", run_dir / "train", run_dir / "vlfeedback"),
                               ("longest", run_dir / "baselines" / "longest" / "train", own)):
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["dataset"] == str(data), name
        assert summary["rows"] + summary["dropped_too_long"] == train_split(data), name


def test_a_missing_baseline_dataset_is_an_error_not_silkies_pairs(finished, tmp_path):
    """A baseline whose policy differs must never quietly train on Silkie's pairs."""
    import shutil

    from silkie.pipeline import Stages

    _, config, run_dir, _, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir / "vlfeedback", copy / "vlfeedback")
    shutil.copytree(run_dir / "train", copy / "train", ignore=shutil.ignore_patterns("checkpoint-*", "merged"))
    with pytest.raises(InputError, match=r"baseline 'longest'.*baselines/longest/vlfeedback"):
        Stages(load_pipeline_config(config=config), copy, print).train(1)
    assert not (copy / "baselines" / "longest" / "train").exists()


def test_the_model_card_carries_the_runs_eval_results(finished, tmp_path):
    from huggingface_hub import ModelCard

    from silkie.train.export import export

    _, _, run_dir, _, _ = finished
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    card = ModelCard.load(export(run_dir / "train" / "adapter", tmp_path / "model") / "README.md")
    parsed = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {(bench, metric): value for bench, metrics in results.items() for metric, value in metrics.items()
                if isinstance(value, (int, float))}
    assert parsed == expected and len(parsed) >= 2


def test_a_finished_run_does_nothing_and_loads_no_model(finished):
    _, config, run_dir, _, _ = finished
    before = (run_dir / LEDGER).read_text()
    probe = ("import sys; from silkie.cli import main; code = main(sys.argv[1:]); "
             "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, "run", "--config", str(config), "--out", str(run_dir)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert (run_dir / LEDGER).read_text() == before


def test_changed_inputs_name_the_stage_and_force_redoes_it(finished, tmp_path):
    _, _, run_dir, _, _ = finished
    changed = load_pipeline_config(config=write_config(tmp_path, **{"dataset.pair_policy": "maxmin"}))
    with pytest.raises(InputError, match=r"stage 'dataset' .*dataset\.pair_policy changed.*--force"):
        plan(changed, run_dir)
    names = stage_names(changed)
    assert plan(changed, run_dir, force=True) == names[names.index("dataset"):]
    assert plan(load_pipeline_config(config=write_config(tmp_path)), run_dir, from_stage="stats") == ["stats", "report"]
    result = silkie("run", "--config", str(write_config(tmp_path, **{"generate.pool": "vlfeedback"})),
                    "--out", str(run_dir))
    assert result.returncode == 2 and "stage 'generate'" in result.stderr and len(result.stderr.splitlines()) == 1
    result = silkie("run", "--config", str(write_config(tmp_path)), "--out", str(run_dir), "--judge-noise", "0.3")
    assert result.returncode == 2 and "stage 'dataset'" in result.stderr and "dataset.judge_noise" in result.stderr


def test_killed_run_resumes_to_the_same_dataset(finished, tmp_path):
    """SIGKILL once the generate stage is under way; the rerun finishes with the same dataset rows as
    the uninterrupted run (whose later rounds and baselines do not touch RUN/vlfeedback, so they are
    left out here to save time)."""
    _, _, reference, _, _ = finished
    config = write_config(tmp_path, rounds=1, baselines={})
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "silkie.cli", "run", "--config", str(config), "--out",
                                str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "TQDM_DISABLE": "1"})
    completions = run_dir / "completions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (completions.is_file() and completions.stat().st_size > 0):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    ledger = json.loads((run_dir / LEDGER).read_text())["stages"]
    assert ledger["generate"]["state"] == "running"  # killed inside the stage, not after it
    result = silkie("run", "--config", str(config), "--out", str(run_dir))
    assert result.returncode == 0, result.stderr
    assert "[generate] resuming" in result.stdout
    assert parquet_rows(run_dir / "vlfeedback") == parquet_rows(reference / "vlfeedback")
    assert (run_dir / "train" / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "report.md").is_file()
