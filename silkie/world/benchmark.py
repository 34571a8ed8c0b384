"""The mini benchmarks' items: held-out world records drawn by quota, none sharing (scene content,
prompt) with the pool's training items.

They live in the world, not in eval/mini.py that answers and scores them, because `world make`
must leave them out of every run's instructions (`benchmark_keys`), and the world sits below eval.

Items come from the world's own generator with a dedicated seed, MINI_SEED (3000): not the pool's
training seed (1000), not the seed its quality is measured on (2000), and not the default seed of
`world make`/`collect --source mini` (0) that a DPO run's instructions come from. The world's scene
space is small, so an item whose (scene content, prompt) occurs among the pool's training items is
dropped (a yes/no pair as a whole). Items are taken in the generator's order, so a smaller `n` gives
a prefix of a larger one's items per subtask.
"""

from __future__ import annotations

import functools
import itertools

from silkie import InputError
from silkie.world.scenes import Scene
from silkie.world.tasks import YES_NO_SUBTASKS, generate
from silkie.world.train_pool import training_keys

MINI_SEED = 3000  # mini benchmarks' items; distinct from TRAIN_SEED, HELD_OUT_SEED and world make's 0
MME_N = 400  # questions, two per image: 50 images per subtask
MMHAL_N = 96  # questions, as in MMHal-Bench
MMHAL_KINDS = ("describe", "count", "color", "position")
_SCAN_LIMIT = 1_000_000  # scenes; the quotas fill long before (a quarter of scenes are yes/no)

def _quotas(total: int, names) -> dict[str, int]:
    names = tuple(names)
    return {name: total // len(names) + (i < total % len(names)) for i, name in enumerate(names)}


def _scenes(seed: int):
    """(scene, its records) in generation order; a scene's records are consecutive."""
    stream = generate(_SCAN_LIMIT, seed)
    for _, group in itertools.groupby(stream, key=lambda pair: pair[0]["id"].rsplit("-", 1)[0]):
        group = list(group)
        yield group[0][1], [record for record, _ in group]


def _draw(seed: int, quotas: dict[str, int], stratum) -> tuple[list[dict], int]:
    """Records filling `quotas` by stratum (None: not wanted), a scene's records kept or dropped as a
    whole when any shares (scene content, prompt) with a training item. Returns (records, dropped)."""
    seen, left = training_keys(), dict(quotas)
    out, dropped = [], 0
    for scene, records in _scenes(seed):
        if not any(left.values()):
            break
        name = stratum(records)
        if not left.get(name):
            continue
        if any((scene.key(), r["prompt"]) in seen for r in records):
            dropped += len(records)
            continue
        out += records
        left[name] -= 1
    return out, dropped


def mme_records(n: int = MME_N, seed: int = MINI_SEED) -> tuple[list[dict], int]:
    """n // 2 yes/no pairs (world records), a quarter per subtask, none overlapping training items.
    Returns (records, questions dropped for overlap)."""
    if n < 2:
        raise InputError("mini-MME needs at least 2 questions (one image)")

    def subtask(records):
        return records[0]["meta"]["subtask"] if records[0]["meta"]["task"] == "yesno" and len(records) == 2 else None
    return _draw(seed, _quotas(n // 2, YES_NO_SUBTASKS), subtask)


def mmhal_records(n: int = MMHAL_N, seed: int = MINI_SEED) -> tuple[list[dict], int]:
    """n open questions, a quarter per kind in MMHAL_KINDS, none overlapping training items."""
    if n < 1:
        raise InputError("mini-MMHal needs at least 1 question")
    return _draw(seed, _quotas(n, MMHAL_KINDS), lambda records: records[0]["meta"]["task"])


def overlap(records: list[dict]) -> int:
    """Records sharing (scene content, prompt) with a training item of the pool (should be 0)."""
    seen = training_keys()
    return sum((Scene.from_dict(r["meta"]["scene"]).key(), r["prompt"]) in seen for r in records)


@functools.cache
def benchmark_keys(n: int = MME_N, n_mmhal: int = MMHAL_N, seed: int = MINI_SEED) -> frozenset:
    """(scene content, prompt) of the default mini benchmarks' items: what `world make` leaves out."""
    records = mme_records(n, seed)[0] + mmhal_records(n_mmhal, seed)[0]
    return frozenset((Scene.from_dict(r["meta"]["scene"]).key(), r["prompt"]) for r in records)
