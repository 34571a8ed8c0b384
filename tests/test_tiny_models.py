"""The tiny models are real transformers VLMs: they save and load with the Auto classes, generate
from image + chat prompt (batched with left padding exactly as unbatched), and train with TRL's
DPOTrainer + a PEFT LoRA adapter on the language model only."""

import math
import time

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
from trl import DPOConfig, DPOTrainer

from silkie.world.models import BUILDERS
from silkie.world.scenes import IMAGE_SIZE

MODELS = ["tiny-qwen2-vl", "tiny-llava"]
IMAGE_TOKENS = {"tiny-qwen2-vl": 25, "tiny-llava": 49}
# transformers 5 VLMs keep the text model under `model.language_model`; a bare ["q_proj", ...] list
# would also hit CLIP's attention in the LLaVA vision tower.
LM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def image(rgb):
    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), rgb)


def user(text):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def load(path):
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_roundtrip(tiny_model_paths, corpus, name):
    model, processor = load(tiny_model_paths[name])
    rebuilt, _ = BUILDERS[name](corpus, seed=0)  # same seed -> same weights: the files are reproducible
    loaded = model.state_dict()
    assert loaded.keys() == rebuilt.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in rebuilt.state_dict().items())

    n_params = sum(p.numel() for p in model.parameters())
    assert 300_000 < n_params < 2_000_000
    assert model.config.get_text_config().vocab_size == len(processor.tokenizer) < 600

    prompt = processor.apply_chat_template(user("Is there a red circle?"), add_generation_prompt=True)
    batch = processor(text=[prompt], images=[image("red")], return_tensors="pt")
    assert (batch["input_ids"] == model.config.image_token_id).sum() == IMAGE_TOKENS[name]


@pytest.mark.parametrize("name", MODELS)
def test_batched_generation_matches_unbatched(tiny_model_paths, name):
    model, processor = load(tiny_model_paths[name])
    items = [
        ("Yes", image((200, 30, 30))),
        ("Is there a blue square in the image? Please answer yes or no.", image((30, 30, 200))),
    ]
    prompts = [processor.apply_chat_template(user(q), add_generation_prompt=True) for q, _ in items]
    # min = max new tokens: no early stop, so each row is compared over the same number of steps.
    gen = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)

    def generate(texts, images):
        batch = processor(text=texts, images=images, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, **gen)
        return batch, out.sequences[:, batch["input_ids"].shape[1]:], torch.stack(out.logits, dim=1)

    assert processor.tokenizer.padding_side == "left"  # the saved default, so callers get it for free
    batch, tokens, logits = generate(prompts, [im for _, im in items])
    assert batch["attention_mask"][0, 0] == 0, "the short prompt must actually be (left) padded"
    assert tokens.shape == (2, 4) and (tokens < len(processor.tokenizer)).all()
    for i, (prompt, (_, im)) in enumerate(zip(prompts, items, strict=True)):
        _, alone_tokens, alone_logits = generate([prompt], [im])
        # Right padding or a dropped mask moves these logits by ~0.3; left padding by ~1e-7.
        torch.testing.assert_close(logits[i], alone_logits[0], atol=1e-4, rtol=1e-4)
        assert tokens[i].tolist() == alone_tokens[0].tolist()
        assert isinstance(processor.decode(alone_tokens[0]), str)


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def preference_dataset():
    rows = [
        ("Is there a red circle in the image? Please answer yes or no.", (200, 30, 30), "Yes", "No"),
        ("Is there a blue square in the image? Please answer yes or no.", (30, 200, 30), "No", "Yes"),
        ("What colour is the circle?", (30, 30, 200), "The circle is blue.", "The circle is red."),
        ("Describe the image.", (200, 200, 30), "There is a yellow circle at the top left.", "I can't help with that."),
    ]
    return Dataset.from_list([
        {
            "images": [image(rgb)],
            "prompt": user(question),
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
        }
        for question, rgb, chosen, rejected in rows
    ])


@pytest.mark.parametrize("name", MODELS)
def test_dpo_lora_step_trains_language_model_only(tiny_model_paths, name, tmp_path):
    model, processor = load(tiny_model_paths[name])
    # Everything outside the language model (vision tower, projector) must come out bit-identical.
    outside_lm = {
        n: p.detach().clone()
        for n, p in model.named_parameters()
        if not n.startswith(("model.language_model.", "lm_head."))
    }
    assert outside_lm
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=3, learning_rate=1e-3,
        max_length=None,  # truncation could cut image tokens
        use_cpu=True, bf16=False, activation_checkpointing=False,  # TRL turns both on by default
        report_to=[], logging_steps=1, save_strategy="no", seed=0,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=LM_LORA_TARGETS)
    timer = StepTimer()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=preference_dataset(), processing_class=processor,
        peft_config=lora, callbacks=[timer],
    )
    lora_params = {n: p for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora_params and all("language_model" in n for n in lora_params)
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} == set(lora_params)
    lora_before = {n: p.detach().clone() for n, p in lora_params.items()}

    trainer.train()

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    # LoRA B starts at zero, so the policy equals the reference (adapter disabled) at step one.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    assert any(not torch.equal(p, lora_before[n]) for n, p in lora_params.items())
    assert all(torch.equal(model.get_parameter(n), p) for n, p in outside_lm.items())
    print(f"\n{name}: DPO step (batch 2) {min(timer.seconds[1:]):.3f}s, steps {[round(s, 3) for s in timer.seconds]}")
