"""The benchmark modules by name, and the scoring that picks one by name: above the modules it lists,
which never import it."""

from __future__ import annotations

from pathlib import Path

from silkie.eval import mme, mmhal, mmvet, redteam
from silkie.eval.common import generic, write_scored

BENCHMARKS = {m.NAME: m for m in (mme, mmhal, mmvet, redteam)}


def benchmark(name: str, items: list[dict] | None = None):
    """The module scoring `name` (or a generic one built from the items' fields)."""
    return BENCHMARKS.get(name) or generic(name, items or [])


def save(folder: str | Path, name: str, items: list[dict]) -> dict:
    """Write `<folder>/<name>/items.jsonl` and `scores.json`, scored by `name`'s module; returns the scores."""
    return write_scored(folder, name, items, benchmark(name, items).score)
