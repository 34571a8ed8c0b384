"""Mini-world instructions: the one code path behind `silkie world make` and `collect --source mini`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from silkie.world.benchmark import benchmark_keys
from silkie.world.scenes import Scene, png_bytes, render
from silkie.world.tasks import SOURCE, corpus, generate

# The record stream (`generate`, `corpus`) lives in tasks.py, below benchmark.py, which draws the mini
# benchmarks' items from it and which `instructions` needs: kept here too, where callers import it.
__all__ = ["SOURCE", "corpus", "generate", "instructions", "scene_image", "write"]


def instructions(n: int, seed: int = 0) -> Iterator[tuple[dict, Scene]]:
    """What `world make` and `collect --source mini` write: `generate` without the mini benchmarks'
    items, so a run's training data can never contain its evaluation items."""
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
