"""Mini-world instructions: the one code path behind `silkie world make` and `collect --source mini`."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

from silkie.world.scenes import Scene, draw_scene, png_bytes, render
from silkie.world.tasks import TASK_MIX, make_tasks

SOURCE = "mini"


def generate(n: int, seed: int = 0, exclude: frozenset = frozenset()) -> Iterator[tuple[dict, Scene]]:
    """n instruction records (without their `image` path yet), each with the scene it is about.
    Items whose (scene content, prompt) is in `exclude` are passed over and not counted.

    Each scene gets its own Random, seeded from (seed, scene index), so item k is the same whatever
    n is and however many items were made before it.
    """
    kinds, weights = zip(*TASK_MIX.items())
    made, scene_index = 0, 0
    while made < n:
        rng = random.Random(f"{seed}/{scene_index}")
        scene = draw_scene(rng)
        kind = rng.choices(kinds, weights)[0]
        for j, task in enumerate(make_tasks(scene, kind, rng)):
            if made == n:
                break
            if exclude and (scene.key(), task.prompt) in exclude:
                continue
            meta = {"task": task.kind, "answer": task.answer, **task.meta, "scene": scene.to_dict()}
            record = {"id": f"{SOURCE}-{seed}-{scene_index:06d}-{j}", "source": SOURCE,
                      "prompt": task.prompt, "meta": meta}
            yield record, scene
            made += 1
        scene_index += 1


def instructions(n: int, seed: int = 0) -> Iterator[tuple[dict, Scene]]:
    """What `world make` and `collect --source mini` write: `generate` without the mini benchmarks'
    items, so a run's training data can never contain its evaluation items."""
    from silkie.eval.mini import benchmark_keys

    return generate(n, seed, benchmark_keys())


def scene_image(scene: Scene) -> bytes:
    """The image file stored for a scene, by `world make` and `collect --source mini` alike."""
    return png_bytes(render(scene))


def write(out_dir: str | Path, n: int, seed: int = 0) -> tuple[Path, int]:
    """Write `out_dir/instructions.jsonl` and `out_dir/images/`; resumes and never duplicates.

    Returns the file and how many records this call added.
    """
    from tqdm import tqdm

    from silkie.io import JsonlWriter, store_image

    out_dir = Path(out_dir)
    path = out_dir / "instructions.jsonl"
    stored: dict[Scene, str] = {}  # a yes/no pair shares its image: draw and hash it once
    added = 0
    with JsonlWriter(path) as writer:
        for record, scene in tqdm(instructions(n, seed), total=n, desc="world make", unit="item", leave=False):
            if (record["id"],) in writer:
                continue
            if scene not in stored:
                stored = {scene: store_image(scene_image(scene), out_dir / "images")}
            record["image"] = stored[scene]
            added += writer.write({k: record[k] for k in ("id", "source", "prompt", "image", "meta")})
    return path, added


def corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """The world's text (prompts and reference answers) that the tiny models' tokenizer learns from."""
    texts = []
    for record, _ in generate(n, seed):
        texts += [record["prompt"], record["meta"]["answer"]]
    return texts
