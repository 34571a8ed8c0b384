"""Train Silkie: DPO (or SFT) + LoRA on the language model with TRL, from a laptop to a cluster.

Public API (heavy imports happen on first use):
- `TrainConfig`, `load_config(preset=, config=, overrides=)` — silkie.train.config
- `train(cfg, resume=False, preflight_only=False) -> TrainResult` — silkie.train.recipe
- `resolve_lora_targets(model, override=None)` — silkie.train.lora
- `preflight(model, processor, dataset, cfg, targets)` — silkie.train.preflight
- `export(adapter, out, merge=False)` — silkie.train.export
- `add_arguments(parser)`, `train_from_args(args)` — the `silkie train` / `python -m silkie.train` CLI
"""

from __future__ import annotations

from silkie.config import parse_set
from silkie.train.config import TrainConfig, load_config

NAMED = ("dataset", "model", "revision", "output_dir", "max_steps")


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="configs/train/NAME.yaml (mini, silkie-paper)")
    source.add_argument("--config", help="a training YAML file")
    parser.add_argument("--dataset", help="a built VLFeedback folder or Hub id (its `pairs` config is read)")
    parser.add_argument("--model", help="base model: path, Hub id or world:NAME")
    parser.add_argument("--revision", help="base model revision")
    parser.add_argument("--output-dir", help="RUN/train folder (checkpoints, adapter/, metrics.jsonl)")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    parser.add_argument("--preflight", action="store_true", help="run the pre-flight checks only")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help="override any config key, value in YAML (e.g. --set mode=sft "
                             "--set 'loss_type=[sigmoid,sft]' --set report_to=[tensorboard])")


def train_from_args(args):
    """The one call behind `silkie train`: config from preset/file + flags, then `train`."""
    from silkie.train.recipe import train

    overrides = {name: getattr(args, name, None) for name in NAMED}
    overrides.update(parse_set(args.set))
    cfg = load_config(preset=args.preset, config=args.config, overrides=overrides)
    result = train(cfg, resume=args.resume, preflight_only=args.preflight)
    print(result.summary())
    return result


def main(argv=None) -> int:
    """`python -m silkie.train ...` (what `accelerate launch` runs): same flags as `silkie train`."""
    import argparse
    import sys

    from silkie import InputError

    parser = argparse.ArgumentParser(prog="python -m silkie.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        train_from_args(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


__all__ = ["TrainConfig", "load_config", "parse_set", "add_arguments", "train_from_args", "main"]
