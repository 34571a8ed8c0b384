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
    from silkie.pipeline import load_pipeline_config as load_config

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


STAGE_COMMANDS = {  # command -> the config dataclasses its flags come from
    ("collect",): ("silkie.sources", ["CollectConfig"]),
    ("generate",): ("silkie.pool.generate", ["GenerateConfig"]),
    ("annotate",): ("silkie.feedback.annotate", ["AnnotateConfig"]),
    ("train",): ("silkie.train", ["SilkieArguments"]),  # + every DPOConfig key, in `silkie train --help` (TRL)
}


def test_each_stage_flag_is_its_configs_field():
    """Every field with help text is a flag of its command, and a flag sets exactly that field."""
    import argparse
    import dataclasses
    import importlib

    from silkie.cli import build_parser
    from silkie.config import given_flags
    from silkie.feedback.openai_judge import JudgeConfig

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for (command,), (module, names) in STAGE_COMMANDS.items():
        classes = [getattr(importlib.import_module(module), n) for n in names]
        classes += [JudgeConfig] if command == "annotate" else []
        options = {o for a in commands[command]._actions for o in a.option_strings}
        for cls in classes:
            for f in dataclasses.fields(cls):
                if "help" in f.metadata:
                    flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
                    assert flag in options, (command, f.name, flag)
    args = build_parser().parse_args(["annotate", "--instructions", "i", "--completions", "c", "--out", "o",
                                      "--budget-usd", "2.5", "--judge", "scene", "--swap-check", "0.1"])
    assert given_flags(JudgeConfig, args) == {"budget_usd": 2.5, "swap_check": 0.1}
    args = build_parser().parse_args(["collect", "--source", "mini", "--source", "llava=x.json", "--n", "5",
                                      "--quota", "mini=2", "--out", "o"])
    from silkie.sources import CollectConfig

    assert given_flags(CollectConfig, args) == {"sources": ["mini", "llava=x.json"], "n": 5, "quotas": [("mini", 2)]}
