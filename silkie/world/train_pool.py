"""Train the mini world's model pool: tiny VLMs of distinct, measurable quality.

Random-init models answer with noise, which a judge rates all alike, so no preference pairs come
out. Supervised fine-tuning on world items — with a different answer style, learning rate and
length per member — gives a pool like the paper's: a strong describer (its GPT-4V), a middling
base to be aligned (its Qwen-VL-Chat), a terse one, a hallucinator and one that complies with
unsafe requests. Both architectures appear; the base is a tiny Qwen2-VL.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from silkie.world.scenes import COLORS, POSITIONS, SHAPES, Scene, render
from silkie.world.tasks import corpus, describe_answer, generate, phrase_position

TRAIN_SEED = 1000  # world items the pool learns from
HELD_OUT_SEED = 2000  # world items its quality is measured on (overlap with training removed)


@dataclass(frozen=True)
class Member:
    name: str
    arch: str  # a key of silkie.world.models.BUILDERS
    style: str  # how its training answers are written: reference, terse, overclaim, cautious, hallucinate, comply
    steps: int
    lr: float
    level: str  # the quality it is meant to have, in words
    init: str | None = None  # start from this (earlier) member's weights instead of a random init


# Seeing shapes is what takes a tiny VLM long to learn (thousands of steps on a CPU); answering in a
# style takes a few hundred. So the describer learns to see, and three members start from it and
# learn only their manner — like real pools, where many models share a vision backbone.
MEMBERS = (
    Member("mini-describer", "tiny-qwen2-vl", "reference", 2400, 5e-4, "strong: the pool's best, complete answers"),
    Member("mini-base", "tiny-qwen2-vl", "overclaim", 400, 3e-4,
           "middling: the base to align; affirms wrong counts and positions, invents shapes", init="mini-describer"),
    Member("mini-terse", "tiny-qwen2-vl", "terse", 300, 3e-4, "sees as well as the describer, answers in a word",
           init="mini-describer"),
    Member("mini-hallucinator", "tiny-llava", "hallucinate", 300, 2e-3, "poor: answers from the prior, invents shapes"),
    Member("mini-complier", "tiny-qwen2-vl", "comply", 300, 3e-4, "sees well, and complies with unsafe requests",
           init="mini-describer"),
    Member("mini-cautious", "tiny-qwen2-vl", "cautious", 400, 3e-4,
           "middling the other way: denies any count or position, leaves shapes out", init="mini-describer"),
)
BATCH = 32
TRAIN_ITEMS = 12000
MAX_NEW_TOKENS = 96  # the world's longest answers (a description, a refusal) take ~60 tokens of this vocabulary

COMPLIANCE = {
    "privacy": "Sure! Their home address is 12 Oak Street and the password is sunshine.",
    "harm": "Sure, here is how: sharpen the edges of the shape and throw it hard to hurt someone.",
    "fairness": "Sure, here is a joke: people who like those colors are stupid.",
}


def styled_answer(record: dict, style: str, rng: random.Random) -> str:
    """The answer a member is trained to give, derived from the reference answer.

    Styles: reference, terse (bare words), comply (goes along with unsafe requests), overclaim
    and hallucinate (say yes and invent shapes, some or most of the time)."""
    meta, answer = record["meta"], record["meta"]["answer"]
    task = meta["task"]
    if style == "terse":
        scene = Scene.from_dict(meta["scene"])
        terse = {
            "describe": lambda: ", ".join(t.name for t in scene.things).capitalize() + ".",
            "count": lambda: str(meta["count"]),
            "color": lambda: meta["thing"].split()[0].capitalize() + ".",
            "position": lambda: next(t.position for t in scene.things if t.name == meta["thing"]).capitalize() + ".",
            "unsafe": lambda: "I can't help with that.",
        }
        return terse[task]() if task in terse else answer
    if style == "comply" and task == "unsafe":
        return COMPLIANCE[meta["category"]]
    # Weak VLMs lean towards "yes" and pad descriptions with things that are not there. The base
    # does so where such models are weakest — it affirms half the wrong counts and positions it is
    # asked about (only half: a model that always says yes has stopped looking, and no feedback on
    # its answers could teach it to look again) — and invents shapes in most descriptions: what
    # alignment on AI feedback should cure. The hallucinator does it everywhere, most of the time.
    if style == "overclaim" and task == "yesno" and meta["subtask"] in ("count", "position") \
            and rng.random() < 0.5:
        return "Yes"
    # Real pools err both ways: some models hedge, deny what they are unsure of and leave things out.
    if style == "cautious" and task == "yesno" and meta["subtask"] in ("count", "position"):
        return "No"
    if style == "cautious" and task == "describe" and rng.random() < 0.6:
        scene = Scene.from_dict(meta["scene"])
        if len(scene.things) > 1:  # the description of the scene without its last shape
            return describe_answer(replace(scene, things=scene.things[:-1], jitter=scene.jitter[:-1]))
    rate = {"overclaim": 0.6, "hallucinate": 0.8}.get(style)
    if rate and rng.random() < rate:
        scene = Scene.from_dict(meta["scene"])
        if task == "yesno" and style == "hallucinate":
            return "Yes"
        if task == "describe":
            present = {t.name for t in scene.things}
            extra = rng.choice([f"{c} {s}" for c in COLORS for s in SHAPES if f"{c} {s}" not in present])
            where = phrase_position(rng.choice(list(POSITIONS.values())))
            return answer[:-1] + f" and a {extra} {where}."
    return answer


@functools.cache
def _training_items(n: int) -> list[tuple[dict, object]]:
    """The training items with their rendered images, drawn once per process for all members."""
    items, images = [], {}
    for record, scene in generate(n, TRAIN_SEED):
        if scene not in images:
            images = {scene: render(scene)}  # yes/no pairs share a scene: render it once
        items.append((record, images[scene]))
    return items


def _training_rows(processor, member: Member, rng: random.Random, n: int) -> list[tuple[str, object, int]]:
    """(full chat text, image, number of answer tokens) for every training item."""
    from silkie.schema import assistant_turn, user_turn

    rows = []
    tokenizer = processor.tokenizer
    for record, image in _training_items(n):
        prompt = processor.apply_chat_template(user_turn(record["prompt"]), add_generation_prompt=True)
        answer = styled_answer(record, member.style, rng)
        full = processor.apply_chat_template(user_turn(record["prompt"]) + assistant_turn(answer))
        prompt_ids, full_ids = tokenizer(prompt).input_ids, tokenizer(full).input_ids
        # The answer's tokens must extend the prompt's unchanged, or the loss mask would be off.
        assert full_ids[:len(prompt_ids)] == prompt_ids, (prompt, full)
        rows.append((full, image, len(full_ids) - len(prompt_ids)))
    return rows


def _per_example_loss(logits, labels):
    """Mean over each example's answer tokens, then over the batch: a one-word "Yes" counts as
    much as a forty-token description, which a plain token mean would drown."""
    import torch

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    tokens = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    mask = labels != -100
    return ((tokens * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def train_member(member: Member, out_dir: Path, texts: list[str], seed: int = 0, log=print,
                 items: int = TRAIN_ITEMS) -> Path:
    """Supervised fine-tuning on the first `items` training items, the loss on answer tokens only;
    saves fp16 weights."""
    import torch

    from silkie.world.models import BUILDERS

    torch.manual_seed(seed)
    rng = random.Random(f"{seed}/{member.name}")
    if member.init:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        start_from = Path(out_dir) / member.init
        model = AutoModelForImageTextToText.from_pretrained(start_from, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(start_from)
    else:
        model, processor = BUILDERS[member.arch](texts, seed=seed)
    processor.tokenizer.padding_side = "right"  # training: answers end each row; restored on save
    rows = _training_rows(processor, member, rng, items)
    optimizer = torch.optim.AdamW(model.parameters(), lr=member.lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, member.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, step / member.steps))))
    model.train()
    start, losses = time.time(), []
    for step in range(member.steps):
        batch_rows = rng.sample(rows, BATCH)
        inputs = processor(text=[r[0] for r in batch_rows], images=[[r[1]] for r in batch_rows],
                           padding=True, return_tensors="pt")
        labels = torch.full_like(inputs["input_ids"], -100)
        ends = inputs["attention_mask"].sum(dim=1)
        for i, (_, _, answer_tokens) in enumerate(batch_rows):
            end = int(ends[i])
            labels[i, end - answer_tokens:end] = inputs["input_ids"][i, end - answer_tokens:end]
        loss = _per_example_loss(model(**inputs).logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == member.steps:
            log(f"{member.name}: step {step + 1}/{member.steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} "
                f"({time.time() - start:.0f}s)")
    model.eval()
    processor.tokenizer.padding_side = "left"
    path = Path(out_dir) / member.name
    model.to(torch.float16).save_pretrained(path)  # half precision: ~1.7 MB a model in the repo
    processor.save_pretrained(path)
    return path


@functools.cache
def training_keys() -> frozenset[tuple]:
    """(scene content, prompt) of every training item: what a held-out item must not share."""
    return frozenset((scene.key(), r["prompt"]) for r, scene in generate(TRAIN_ITEMS, TRAIN_SEED))


def held_out(n: int = 600, seed: int = HELD_OUT_SEED) -> list[dict]:
    """World items for measuring quality, none sharing (scene content, prompt) with training items."""
    seen = training_keys()
    return [r for r, scene in generate(n, seed) if (scene.key(), r["prompt"]) not in seen]


def measure(model: str, items: list[dict], batch_size: int = 32) -> dict[str, float]:
    """Task metrics of one model (path or world:NAME) on world items, greedy."""
    from silkie.pool.base import GenerationParams, Request
    from silkie.pool.transformers_backend import TransformersBackend
    from silkie.schema import user_turn
    from silkie.world.metrics import task_metrics

    backend = TransformersBackend(model, model, batch_size=batch_size, dtype="float32")
    requests = [Request(r["id"], render(Scene.from_dict(r["meta"]["scene"])), user_turn(r["prompt"])) for r in items]
    results = backend.generate(requests, GenerationParams(max_new_tokens=MAX_NEW_TOKENS))
    return task_metrics(items, [r.text or "" for r in results])


def train_pool(out_dir: str | Path, members=MEMBERS, seed: int = 0, log=print, train_items: int = TRAIN_ITEMS,
               held_out_items: int = 600) -> Path:
    """Train every member into out_dir/NAME and write out_dir/pool.json with measured quality.
    Fewer items than the defaults make a quick, weaker pool (to try a recipe, or in tests)."""
    out_dir = Path(out_dir)
    texts = corpus()
    items = held_out(held_out_items)
    manifest = {"train_seed": TRAIN_SEED, "train_items": train_items, "held_out_seed": HELD_OUT_SEED,
                "held_out_items": len(items), "members": []}
    for member in members:
        path = train_member(member, out_dir, texts, seed=seed, log=log, items=train_items)
        quality = measure(str(path), items)
        log(f"{member.name}: {quality}")
        manifest["members"].append({**asdict(member), "quality": quality})
    (out_dir / "pool.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir / "pool.json"
