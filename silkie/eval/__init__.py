"""Evaluation: one module per benchmark behind one small interface, plus a paired comparison.

A benchmark module has NAME and pure functions over its scored items (dicts with a unique "id"):
  score(items) -> dict          the benchmark's report (what scores.json holds)
  units(items) -> {stratum: {unit: [floats]}}   the resampling units (MME: images within subtasks)
  headline(means) -> {metric: value}   the headline metrics from each stratum's mean unit vector
  correct: item -> bool, or None   the paired binary outcome McNemar's test reads, if there is one
so `score`'s headline figures and the bootstrap in compare.py are the same computation.

A benchmark module that answers a real release also has `run(spec, data, out, [judge,] log)` (see
runner.py for what runs share), and a module may carry NOTE, a line every comparison report prints.

A model's evaluation folder holds, per benchmark, `<benchmark>/items.jsonl` (one scored item a line)
and `<benchmark>/scores.json` (score(items)). A folder of a benchmark without a module here is
compared generically: items with "correct" (bool) give "accuracy", items with "score" (number)
give "score".

This file only re-exports: the folder layout is common.py's, the modules by name registry.py's, so a
benchmark module imports what it shares from below and never the package that lists it.
"""

from silkie.eval.common import ITEMS, SCORES, load
from silkie.eval.mme import mme_score
from silkie.eval.registry import BENCHMARKS, benchmark, save

__all__ = ["BENCHMARKS", "ITEMS", "SCORES", "benchmark", "load", "mme_score", "save"]
