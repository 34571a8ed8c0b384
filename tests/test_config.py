"""Configs are checked when they are loaded: `silkie run` refuses a bad preset before any stage runs,
in one line naming the file and the key, nested override maps and pair policies included."""

import json

import pytest
import yaml

from silkie.cli import main
from silkie.config import RESOURCES

MINI = yaml.safe_load((RESOURCES / "configs" / "pipeline" / "mini.yaml").read_text())


def edited(change) -> dict:
    data = json.loads(json.dumps(MINI))
    change(data)
    return data


BAD = {
    "dataset.pair_policy": (lambda d: d["dataset"].update(pair_policy="margn:1"), "unknown pair policy 'margn:1'"),
    "baselines.longest.pair_policy": (lambda d: d["baselines"]["longest"].update(pair_policy="margin"),
                                      "needs an argument"),
    "baselines.sft.set": (lambda d: d["baselines"]["sft"]["set"].update(mdoe="sft"), "unknown key 'mdoe'"),
    "train.set": (lambda d: d["train"].update(set={"learning_rate": "fast"}), "learning_rate: expected float"),
    "annotate.overrides": (lambda d: d["annotate"].update(overrides={"rmp": 3}), "unknown key 'rmp'"),
    "dataset.judge_noise": (lambda d: d["dataset"].update(judge_noise=1.5), "must be between 0 and 1"),
    "eval.benchmarks": (lambda d: d["eval"]["benchmarks"].update(mini={"nn": 3}), "unknown option 'nn'"),
    "rounds": (lambda d: d.update(rounds=0), "must be at least 1"),
    "generate.pool": (lambda d: d["generate"].update(pool="no-such-pool"), "no pool preset 'no-such-pool'"),
    "annotate.judge": (lambda d: d["annotate"].update(judge="gpt"), "'gpt' is not one of openai, scene"),
    "collect": (lambda d: d["collect"].update(quota={"mini": 3}), "unknown key 'quota'"),
}


@pytest.mark.parametrize("key", list(BAD))
def test_silkie_run_refuses_a_bad_config_before_any_stage(key, tmp_path, capsys):
    change, message = BAD[key]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(edited(change)))
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and str(path) in error and message in error, error
    assert key.split(".")[-1] in error, error
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_every_shipped_pipeline_config_passes(tmp_path):
    from silkie.pipeline import load_config

    for path in (RESOURCES / "configs" / "pipeline").glob("*.yaml"):
        assert load_config(config=path).name == path.stem


def test_set_overrides_are_yaml_and_dotted():
    from silkie.config import apply_overrides, parse_set

    assert parse_set(["loss-type=[sigmoid,sft]", "bf16=false", "dataset.judge_noise=0.2"]) == \
        {"loss_type": ["sigmoid", "sft"], "bf16": False, "dataset.judge_noise": 0.2}
    assert apply_overrides({"dataset": {"pair_policy": "silkie"}}, {"dataset.judge_noise": 0.2, "seed": None}) == \
        {"dataset": {"pair_policy": "silkie", "judge_noise": 0.2}}
    with pytest.raises(ValueError, match="--set takes key=value"):
        parse_set(["nonsense"])
