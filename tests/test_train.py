"""The Silkie recipe on the tiny models: DPO + LoRA learns a separable pair set, touches only the
language model, round-trips through save/load/merge/export, and the reference cache gives TRL's loss."""

import json
import math

import pytest
import torch
from datasets import Dataset

from silkie import InputError
from silkie.schema import PAIRS_FEATURES, assistant_turn, user_turn
from silkie.train import load_train_config
from silkie.world.scenes import IMAGE_SIZE


def toy_pairs(n=16):
    """Separable pairs: the chosen answer is always "Yes, a red circle.", the rejected one "No."."""
    from PIL import Image

    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    return [{"id": f"toy-{i}", "images": [Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), colours[i % 4])],
             "prompt": user_turn(f"Question {i % 4}: is there a red circle?"),
             "chosen": assistant_turn("Yes, a red circle."), "rejected": assistant_turn("No."),
             "chosen_model": "a", "rejected_model": "b", "chosen_score": 5.0, "rejected_score": 1.0}
            for i in range(n)]


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    """A folder whose `pairs` config loads with load_dataset, like a built VLFeedback folder."""
    root = tmp_path_factory.mktemp("toy-pairs")
    (root / "data" / "pairs").mkdir(parents=True)
    Dataset.from_list(toy_pairs(), features=PAIRS_FEATURES).to_parquet(root / "data" / "pairs" / "train-0.parquet")
    (root / "README.md").write_text("---\nconfigs:\n- config_name: pairs\n  data_files:\n  - split: train\n"
                                    "    path: data/pairs/train-*\n---\n")
    return root


def config(dataset, model, out, **extra):
    values = dict(dataset=str(dataset), model=str(model), output_dir=str(out), max_steps=8, learning_rate=5e-3,
                  per_device_train_batch_size=4, global_batch_size=4, logging_steps=1, save_steps=100,
                  warmup_ratio=0.0, lr_scheduler_type="constant", preflight_rows=4)
    values.update(extra)
    return load_train_config(preset="mini", overrides=values)


def logits(model, processor, row):
    from silkie.train.preflight import collator

    batch = collator(processor)([dict(row)])
    batch.pop("completion_mask")
    with torch.no_grad():
        return model.eval()(**batch, use_cache=False).logits


def outside_language_model(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(("model.language_model.",
                                                                                           "lm_head."))}


@pytest.fixture(scope="module")
def qwen_run(toy_dataset, tiny_model_paths, tmp_path_factory):
    from transformers import AutoModelForImageTextToText

    from silkie.train.recipe import train

    out = tmp_path_factory.mktemp("qwen-run") / "train"
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_paths["tiny-qwen2-vl"])
    frozen = outside_language_model(base)
    result = train(config(toy_dataset, tiny_model_paths["tiny-qwen2-vl"], out))
    return result, frozen


def test_dpo_learns_separable_pairs_and_touches_only_the_language_model(qwen_run):
    result, frozen = qwen_run
    logs = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [log for log in logs if "rewards/margins" in log]
    assert len(steps) == 8 and all(math.isfinite(log["loss"]) for log in steps)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # LoRA B = 0: policy = reference
    assert steps[-1]["rewards/margins"] > 0.05 and steps[-1]["rewards/accuracies"] == 1.0
    assert steps[-1]["loss"] < steps[0]["loss"]
    config = json.loads((result.adapter / "adapter_config.json").read_text())
    assert config["target_modules"].startswith(r"model\.language_model\.")
    base = result.model.get_base_model()
    lora = [n for n, _ in base.named_parameters() if "lora_" in n]
    assert lora and all(n.startswith("model.language_model.") for n in lora)
    assert all(torch.equal(base.get_parameter(n), p) for n, p in frozen.items())  # vision tower, merger: bit-identical
    assert list((result.output_dir / "ref_cache").glob("*.safetensors"))
    assert (result.output_dir / "preflight.json").is_file() and (result.output_dir / "train_config.yaml").is_file()


def test_adapter_round_trip_merge_and_export(qwen_run, tiny_model_paths, toy_dataset, tmp_path):
    from datasets import load_dataset

    from silkie.chat import chat, load
    from silkie.train.export import export

    result, _ = qwen_run
    row = load_dataset(str(toy_dataset), "pairs", split="train")[0]
    trained = logits(result.model, load(str(tiny_model_paths["tiny-qwen2-vl"])).processor, row)
    reloaded = load(str(tiny_model_paths["tiny-qwen2-vl"]), adapter=str(result.adapter))
    assert torch.equal(logits(reloaded.model, reloaded.processor, row), trained)  # save -> load: identical
    base = load(str(tiny_model_paths["tiny-qwen2-vl"]))
    assert not torch.allclose(logits(base.model, base.processor, row), trained)  # the adapter does something

    out = export(result.adapter, tmp_path / "export", merge=True)
    merged = load(str(out))
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    torch.testing.assert_close(logits(merged.model, merged.processor, row), trained, atol=1e-5, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert "LoRA: r=16" in card and "sigmoid" in card and (out / "adapter" / "adapter_config.json").is_file()
    from_adapter_folder = load(str(out / "adapter"))  # an adapter folder alone names its base
    assert torch.equal(logits(from_adapter_folder.model, from_adapter_folder.processor, row), trained)
    assert isinstance(chat(merged, row["images"][0], "Is there a red circle?", max_new_tokens=4), str)


def test_cached_reference_gives_the_uncached_loss(toy_dataset, tiny_model_paths, tmp_path):
    from datasets import load_dataset

    from silkie.chat import load_for_training
    from silkie.train.lora import lora_config, resolve_lora_targets
    from silkie.train.recipe import REF_COLUMNS, SilkieDPOTrainer, dpo_args

    cfg = config(toy_dataset, tiny_model_paths["tiny-qwen2-vl"], tmp_path)
    model, processor = load_for_training(cfg.model, bf16=False)
    rows = load_dataset(str(toy_dataset), "pairs", split="train").select(range(4))
    targets = resolve_lora_targets(model)
    trainer = SilkieDPOTrainer(model=model, args=dpo_args(cfg), train_dataset=rows, processing_class=processor,
                               peft_config=lora_config(targets, 8, 16, 0.0))
    with torch.no_grad():  # a non-zero adapter, so policy and reference differ
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    examples = [dict(rows[i]) for i in range(4)]
    plain = trainer._prepare_inputs(trainer.data_collator([dict(e) for e in examples]))
    uncached = trainer.compute_loss(trainer.model, plain)
    chosen, rejected = trainer.compute_reference(rows, batch_size=3)  # another batching than training's
    cached_rows = rows.add_column(REF_COLUMNS[0], chosen).add_column(REF_COLUMNS[1], rejected)
    trainer.use_reference(cached_rows)
    batch = trainer._prepare_inputs(trainer.data_collator([dict(cached_rows[i]) for i in range(4)]))
    assert set(REF_COLUMNS) <= set(batch)
    cached = trainer.compute_loss(trainer.model, batch)
    assert uncached.item() > 0.01 and abs(uncached.item() - math.log(2)) > 1e-3
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)


def test_llava_targets_language_model_and_trains_with_vision_frozen(toy_dataset, tiny_model_paths, tmp_path):
    from transformers import AutoModelForImageTextToText

    from silkie.train.lora import resolve_lora_targets
    from silkie.train.recipe import train

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_paths["tiny-llava"])
    targets = resolve_lora_targets(base)
    assert targets.decoder == "model.language_model" and len(targets.modules) == 14
    assert not any("vision_tower" in m or "projector" in m for m in targets.modules)
    with pytest.raises(InputError, match="outside the language model"):
        resolve_lora_targets(base, r".*\.q_proj")  # a bare name also hits CLIP's attention
    frozen = outside_language_model(base)
    result = train(config(toy_dataset, tiny_model_paths["tiny-llava"], tmp_path / "train", max_steps=3, max_rows=8))
    trained = result.model.get_base_model()
    assert result.global_step == 3
    assert all(torch.equal(trained.get_parameter(n), p) for n, p in frozen.items())


def test_preflight_catches_image_token_mismatch_and_drops_long_rows(tiny_model_paths, tmp_path):
    from silkie.chat import load_for_training
    from silkie.train.lora import resolve_lora_targets
    from silkie.train.preflight import preflight

    rows = toy_pairs(4)
    rows[1]["chosen"] = assistant_turn("yes " * 300)  # over max_length
    model, processor = load_for_training(str(tiny_model_paths["tiny-qwen2-vl"]), bf16=False)
    cfg = config(tmp_path, tiny_model_paths["tiny-qwen2-vl"], tmp_path, max_length=200)
    targets = resolve_lora_targets(model)
    report = preflight(model, processor, Dataset.from_list(rows, features=PAIRS_FEATURES), cfg, targets)
    assert report.problems == [] and report.too_long == ["toy-1"] and report.kept == [0, 2, 3]
    assert report.longest <= 200 < report.longest_overall and report.image_tokens == 25
    assert 0 < report.trainable < report.total and report.memory_gb > 0
    assert all(m.startswith("model.language_model.") for m in report.lora_modules)

    rows = toy_pairs(4)
    rows[2]["prompt"] = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "image", "text": None},
                                                      {"type": "text", "text": "Two images?"}]}]  # one image only
    report = preflight(model, processor, Dataset.from_list(rows, features=PAIRS_FEATURES), cfg, targets)
    assert report.problems and "toy-2: 2 image placeholders for 1 images" in report.problems[0]


def test_resume_after_a_kill_reaches_the_final_step(toy_dataset, tiny_model_paths, tmp_path):
    from silkie.train.recipe import _StopAt, train

    cfg = config(toy_dataset, tiny_model_paths["tiny-qwen2-vl"], tmp_path / "train", max_steps=4, save_steps=2,
                 max_rows=8, per_device_train_batch_size=2, global_batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_StopAt(3)])  # killed after step 3: the last checkpoint is step 2
    assert (tmp_path / "train" / "checkpoint-2").is_dir() and not (tmp_path / "train" / "adapter").exists()
    result = train(cfg, resume=True)
    assert result.global_step == 4 and (result.adapter / "adapter_model.safetensors").is_file()
    steps = [json.loads(line)["step"] for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    # the killed run logged steps 1-2 (it died inside step 3), the resumed one redid 3 from checkpoint-2, then 4
    # and the final summary line
    assert steps == [1, 2, 3, 4, 4]


def adapter_weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resumed_training_ends_with_the_uninterrupted_adapter(toy_dataset, tiny_model_paths, tmp_path):
    """A run killed after step 3 and resumed from checkpoint-2 ends where a run never stopped ends."""
    from silkie.train.recipe import _StopAt, train

    def cfg(out):
        return config(toy_dataset, tiny_model_paths["tiny-qwen2-vl"], out, max_steps=4, save_steps=2, max_rows=8,
                      per_device_train_batch_size=2, global_batch_size=2)

    whole = train(cfg(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "killed"), callbacks=[_StopAt(3)])
    resumed = train(cfg(tmp_path / "killed"), resume=True)
    a, b = adapter_weights(whole.adapter), adapter_weights(resumed.adapter)
    assert a.keys() == b.keys() and any(t.abs().max() > 0 for k, t in a.items() if "lora_B" in k)  # it learned
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=1e-5)


def test_sft_mode_trains_on_the_chosen_answers_only(toy_dataset, tiny_model_paths, tmp_path):
    """The same chosen answers with other rejected ones give the same SFT adapter (the rejected side never
    enters the loss), while DPO on the same two sets differs."""
    from silkie.train.recipe import train

    other = tmp_path / "other-rejected"
    (other / "data" / "pairs").mkdir(parents=True)
    rows = [{**row, "rejected": assistant_turn(f"Red {i % 3}, or maybe a green one.")}
            for i, row in enumerate(toy_pairs())]
    Dataset.from_list(rows, features=PAIRS_FEATURES).to_parquet(other / "data" / "pairs" / "train-0.parquet")
    (other / "README.md").write_text((toy_dataset / "README.md").read_text())

    def run(dataset, mode, out):
        return train(config(dataset, tiny_model_paths["tiny-qwen2-vl"], tmp_path / out, mode=mode, max_steps=3))

    first, second = run(toy_dataset, "sft", "sft-a"), run(other, "sft", "sft-b")
    assert json.loads((first.output_dir / "summary.json").read_text())["mode"] == "sft"


    def gap(x, y):
        a, b = adapter_weights(x.adapter), adapter_weights(y.adapter)
        return max((a[key] - b[key]).abs().max().item() for key in a)

    assert any(t.abs().max() > 1e-3 for k, t in adapter_weights(first.adapter).items() if "lora_B" in k)  # it learned
    # chosen and rejected go through the model as one batch, so the rejected side can still move the
    # chosen side's numbers by float rounding (a few 1e-5 seen); DPO's difference is orders larger
    sft_gap = gap(first, second)
    dpo_gap = gap(run(toy_dataset, "dpo", "dpo-a"), run(other, "dpo", "dpo-b"))
    assert sft_gap < 1e-3 and dpo_gap > 30 * sft_gap, (sft_gap, dpo_gap)


def test_command_line_flags_override_the_preset_and_reach_trl(tmp_path):
    """`silkie train --preset mini --beta 0.2 --set lora_r=8 ...`: every key is a flag generated from
    SilkieArguments or DPOConfig, flags override the preset, --set comes last; the old spellings stay."""
    from silkie.train import build_parser, config_from_args
    from silkie.train.recipe import dpo_args

    argv = ["--preset", "mini", "--dataset", "d", "--model", "world:mini-terse", "--revision", "main",
            "--output-dir", str(tmp_path), "--max-steps", "5", "--beta", "0.2", "--learning-rate", "1e-4",
            "--adam_epsilon", "1e-7", "--lora_alpha", "4", "--loss_weights", "1", "0.5", "--set", "lora_r=8",
            "--set", "learning_rate=2.0e-4", "--preflight"]
    args = build_parser("silkie train").parse_args(argv)
    cfg = config_from_args(args)
    assert args.preflight and not args.resume
    assert (cfg.beta, cfg.lora_r, cfg.lora_alpha, cfg.learning_rate) == (0.2, 8, 4, 2e-4)
    assert (cfg.model, cfg.revision, cfg.dataset, cfg.max_steps) == ("world:mini-terse", "main", "d", 5)
    assert cfg.weight_decay == 0.05 and cfg.lora_dropout == 0.0  # the preset's, where no flag was given
    args = dpo_args(cfg.check())
    assert (args.beta, args.learning_rate, args.adam_epsilon, args.max_steps) == (0.2, 2e-4, 1e-7, 5)
    assert list(args.loss_type) == ["sigmoid", "sft"] and list(args.loss_weights) == [1.0, 0.5]
    assert args.output_dir == str(tmp_path)


def test_training_is_quiet_unless_verbose(toy_dataset, tiny_model_paths, tmp_path):
    """`python -m silkie.train`: one line per logged step, no raw metric dicts, no per-model "Loading
    weights" bar, no deprecation warning; -v brings them back. In a process of its own, as users run it."""
    import os
    import subprocess
    import sys

    def run(*flags):
        command = [sys.executable, "-m", "silkie.train", "--preset", "mini", "--dataset", str(toy_dataset),
                   "--model", str(tiny_model_paths["tiny-qwen2-vl"]), "--output-dir", str(tmp_path / str(len(flags))),
                   "--max-steps", "2", "--max-rows", "8", "--per-device-train-batch-size", "4",
                   "--global-batch-size", "4", "--logging-steps", "1", "--preflight-rows", "2", *flags]
        env = {k: v for k, v in os.environ.items() if k != "SILKIE_VERBOSE"}
        done = subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout + done.stderr

    shown = run()
    assert "step 1/2: loss=" in shown and "step 2/2: loss=" in shown and "trained 2 steps" in shown
    for noise in ("{'loss'", "Loading weights", "Warning"):
        assert noise not in shown, (noise, shown)
    shown = run("-v")
    assert "step 1/2: loss=" in shown and "{'loss'" in shown and "Loading weights" in shown
