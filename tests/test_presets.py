"""Every shipped preset loads and validates, the paper preset says what the paper says, and the
training arguments TRL receives carry the config's values."""

import pytest

from silkie.config import RESOURCES

PRESETS = RESOURCES / "configs"


def names(kind: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS / kind).glob("*.yaml"))


def test_every_shipped_preset_loads():
    from silkie.feedback.openai_judge import load_judge_config
    from silkie.pipeline import load_pipeline_config as pipeline_config
    from silkie.pool.config import load_pool
    from silkie.train import load_train_config as train_config

    assert names("pipeline") and names("train") and names("pool") and names("judge")
    for name in names("pipeline"):
        cfg = pipeline_config(name)
        assert cfg.name == name
        train_config(preset=cfg.train.preset, overrides={**cfg.train.set, "dataset": "d"}).check()
        for baseline in cfg.baselines:
            train_config(preset=cfg.train.preset, overrides={**cfg.baselines[baseline].set, "dataset": "d"}).check()
    for name in names("train"):
        train_config(preset=name, overrides={"dataset": "d"}).check()
    for name in names("pool"):
        pool = load_pool(name)
        assert len(pool.models) >= pool.per_instruction
    for name in names("judge"):
        assert load_judge_config(name).model


def test_the_paper_preset_is_the_papers_recipe():
    """Li et al. (2023), section 4: LoRA r 64 / alpha 16 / dropout 0.05, lr 1e-5 with a cosine schedule and
    warmup 0.1, weight decay 0.05, Adam beta2 0.98, DPO beta 0.1, 3 epochs, global batch 256, max length 2048."""
    from silkie.train import load_train_config as load_config

    cfg = load_config(preset="silkie-paper")
    paper = dict(lora_r=64, lora_alpha=16, lora_dropout=0.05, learning_rate=1e-5, lr_scheduler_type="cosine",
                 warmup_ratio=0.1, weight_decay=0.05, adam_beta2=0.98, beta=0.1, num_train_epochs=3,
                 global_batch_size=256, max_length=2048, mode="dpo", loss_type=["sigmoid"])
    assert {key: getattr(cfg, key) for key in paper} == paper
    assert cfg.accumulation(world_size=8) * cfg.per_device_train_batch_size * 8 == 256


@pytest.mark.parametrize("preset", ["silkie-paper", "mini"])
def test_trl_receives_the_configs_optimisation_and_loss(preset, tmp_path):
    from silkie.train import load_train_config as load_config
    from silkie.train.recipe import dpo_args

    cfg = load_config(preset=preset, overrides={"dataset": "d", "output_dir": str(tmp_path)})
    args = dpo_args(cfg)
    assert args.beta == cfg.beta and args.adam_beta2 == cfg.adam_beta2
    assert args.weight_decay == cfg.weight_decay and args.learning_rate == cfg.learning_rate
    assert str(args.lr_scheduler_type.value if hasattr(args.lr_scheduler_type, "value") else args.lr_scheduler_type) \
        == cfg.lr_scheduler_type
    assert args.warmup_steps == cfg.warmup_ratio  # transformers 5: a value below 1 is a share of the steps
    assert list(args.loss_type) == list(cfg.loss_type) and args.num_train_epochs == cfg.num_train_epochs
    assert args.gradient_accumulation_steps * args.per_device_train_batch_size == cfg.global_batch_size


def write_preset(tmp_path, **changes):
    """The mini preset as a YAML file of its own, with `changes` on top."""
    import yaml

    data = {**yaml.safe_load((PRESETS / "train" / "mini.yaml").read_text()), **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("key", ["mdoe", "lora_rank"])
def test_a_key_neither_silkies_nor_dpoconfigs_is_refused_naming_file_and_key(key, tmp_path):
    from silkie import InputError
    from silkie.train import load_train_config as load_config

    path = write_preset(tmp_path, **{key: 1})
    with pytest.raises(InputError) as error:
        load_config(config=path, overrides={"dataset": "d"}).check()
    assert str(path) in str(error.value) and f"unknown key {key!r}" in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_every_dpoconfig_key_of_a_preset_reaches_trl_as_written(tmp_path):
    """Keys this project never names (max_grad_norm, adam_epsilon, optim) reach TRL: nothing is copied
    by hand. Only the keys dpo_args decides itself differ from what the preset wrote."""
    from silkie.train import load_train_config as load_config
    from silkie.train.recipe import dpo_args

    path = write_preset(tmp_path, max_grad_norm=0.5, adam_epsilon=1e-7, optim="adafactor", save_total_limit=7)
    cfg = load_config(config=path, overrides={"dataset": "d", "output_dir": str(tmp_path / "out")}).check()
    args = dpo_args(cfg)
    assert (args.max_grad_norm, args.adam_epsilon, args.save_total_limit) == (0.5, 1e-7, 7)
    decided = {"max_length", "bf16", "activation_checkpointing", "gradient_checkpointing", "report_to"}
    for key, value in cfg.dpo.items():
        if key not in decided:
            got = getattr(args, key)
            assert getattr(got, "value", got) == value, key
    assert args.max_length is None and cfg.max_length == 512  # the pre-flight drops longer rows instead


def test_warmup_ratio_is_the_papers_share_and_warmup_steps_replaces_it(tmp_path):
    from silkie import InputError
    from silkie.train import load_train_config as load_config
    from silkie.train.recipe import dpo_args

    paper = load_config(preset="silkie-paper", overrides={"dataset": "d"})
    assert dpo_args(paper).warmup_steps == 0.1 and paper.to_dict()["warmup_ratio"] == 0.1
    steps = load_config(preset="silkie-paper", overrides={"dataset": "d", "warmup_steps": 30})
    assert steps.warmup_ratio is None and dpo_args(steps).warmup_steps == 30
    with pytest.raises(InputError, match="warmup_ratio and warmup_steps both set"):
        load_config(config=write_preset(tmp_path, warmup_steps=30), overrides={"dataset": "d"})


def test_the_saved_train_config_loads_back_to_the_same_trl_arguments(tmp_path):
    """train_config.yaml (to_dict) is a flat config of its own: `--config` on it gives TRL the same args,
    and it carries the keys the model card shows."""
    import yaml

    from silkie.train import load_train_config as load_config
    from silkie.train.recipe import dpo_args

    cfg = load_config(preset="mini", overrides={"dataset": "d", "output_dir": str(tmp_path), "max_grad_norm": 0.5})
    saved = tmp_path / "train_config.yaml"
    saved.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    again = load_config(config=saved)
    assert dpo_args(again).to_dict() == dpo_args(cfg).to_dict() and again.to_dict() == cfg.to_dict()
    card = ("lora_r", "beta", "learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "adam_beta2",
            "num_train_epochs", "global_batch_size", "max_length", "loss_type", "loss_weights", "mode", "model")
    assert set(card) <= set(cfg.to_dict())


def test_silkies_keys_are_checked_without_importing_torch():
    """`silkie run` checks its training keys on load, and a finished run must not import torch."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from silkie import InputError\n"
            "from silkie.train.config import check_keys\n"
            "cfg = check_keys('mini', {'dataset': '-', 'learning_rate': 1e-4})\n"
            "assert cfg.lora_r == 16 and cfg.mode == 'dpo'\n"
            "for bad in ({'lora_r': 'x'}, {'mode': 'ppo'}, {'dataset': None, 'warmup_ratio': 2}):\n"
            "    try:\n"
            "        check_keys('mini', {'dataset': '-', **bad})\n"
            "        raise SystemExit(f'passed: {bad}')\n"
            "    except InputError as error:\n"
            "        assert 'mini.yaml' in str(error), error\n"
            "assert 'torch' not in sys.modules and 'trl' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
