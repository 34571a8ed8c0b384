"""Every shipped preset loads and validates, the paper preset says what the paper says, and the
training arguments TRL receives carry the config's values."""

import pytest

from silkie.config import RESOURCES

PRESETS = RESOURCES / "configs"


def names(kind: str) -> list[str]:
    return sorted(p.stem for p in (PRESETS / kind).glob("*.yaml"))


def test_every_shipped_preset_loads():
    from silkie.feedback.openai_judge import load_judge_config
    from silkie.pipeline import load_config as pipeline_config
    from silkie.pool.config import load_pool
    from silkie.train import load_config as train_config

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
    from silkie.train import load_config

    cfg = load_config(preset="silkie-paper")
    paper = dict(lora_r=64, lora_alpha=16, lora_dropout=0.05, learning_rate=1e-5, lr_scheduler_type="cosine",
                 warmup_ratio=0.1, weight_decay=0.05, adam_beta2=0.98, beta=0.1, num_train_epochs=3,
                 global_batch_size=256, max_length=2048, mode="dpo", loss_type=["sigmoid"])
    assert {key: getattr(cfg, key) for key in paper} == paper
    assert cfg.accumulation(world_size=8) * cfg.per_device_train_batch_size * 8 == 256


@pytest.mark.parametrize("preset", ["silkie-paper", "mini"])
def test_trl_receives_the_configs_optimisation_and_loss(preset, tmp_path):
    from silkie.train import load_config
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
