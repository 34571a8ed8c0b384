"""Base vs trained on the same items, with paired statistics.

Both models answered the same questions, so the honest uncertainty of the difference comes from
resampling items (not models): a paired bootstrap draws the benchmark's units with replacement —
the same draw for both models — and recomputes each headline metric, giving a 95% percentile
interval for trained - base. Units are what the metric needs whole: MME resamples images within
each subtask, so acc+ keeps its two questions per image and every subtask keeps its size. For
yes/no outcomes McNemar's exact test asks whether the discordant pairs lean one way (a two-sided
binomial test with p = 1/2 on the items that only one model got right).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from silkie import InputError
from silkie.eval.common import ITEMS, load
from silkie.eval.registry import BENCHMARKS, benchmark

RESAMPLES, SEED, LEVEL = 2000, 0, 0.95
DIGITS = 4


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: b items only the base got right,
    c only the trained. Integer arithmetic, so it stays exact for thousands of items."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _aligned(base: dict, trained: dict, name: str):
    """Per stratum, the units both models have, as two equal-length lists of vectors."""
    out = {}
    for stratum in sorted(set(base) | set(trained)):
        ids = sorted(set(base.get(stratum, {})) & set(trained.get(stratum, {})))
        if ids:
            out[stratum] = ([base[stratum][u] for u in ids], [trained[stratum][u] for u in ids])
    if not out:
        raise InputError(f"{name}: the two models share no items")
    return out


def _means(rows):
    return [sum(col) / len(rows) for col in zip(*rows)]


def paired_bootstrap(base_units: dict, trained_units: dict, headline, resamples: int = RESAMPLES,
                     seed: int = SEED, level: float = LEVEL, name: str = "benchmark") -> dict:
    """{metric: {"base", "trained", "delta", "ci": [lo, hi]}} over the units both models have.
    Units are resampled within each stratum, the same draw for both models (seeded numpy)."""
    import numpy as np

    strata = _aligned(base_units, trained_units, name)
    observed_b = headline({s: _means(b) for s, (b, _) in strata.items()})
    observed_t = headline({s: _means(t) for s, (_, t) in strata.items()})
    rng = np.random.default_rng(seed)
    draws = {}  # stratum -> (base means, trained means), each (resamples, k)
    for s, (b, t) in strata.items():
        b, t = np.asarray(b, dtype=float), np.asarray(t, dtype=float)
        n, mb, mt = len(b), [], []
        chunk = max(1, 2_000_000 // (n * b.shape[1]))  # bound the (chunk, n, k) gather
        for start in range(0, resamples, chunk):
            idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
            mb.append(b[idx].mean(axis=1))
            mt.append(t[idx].mean(axis=1))
        draws[s] = (np.concatenate(mb), np.concatenate(mt))
    deltas = {m: np.empty(resamples) for m in observed_b}
    for r in range(resamples):
        hb = headline({s: d[0][r] for s, d in draws.items()})
        ht = headline({s: d[1][r] for s, d in draws.items()})
        for m in deltas:
            deltas[m][r] = ht[m] - hb[m]
    tail = 100 * (1 - level) / 2
    return {m: {"base": observed_b[m], "trained": observed_t[m], "delta": observed_t[m] - observed_b[m],
                "ci": [float(x) for x in np.percentile(deltas[m], [tail, 100 - tail])]} for m in observed_b}


def compare_benchmark(name: str, base: list[dict], trained: list[dict], resamples: int = RESAMPLES,
                      seed: int = SEED) -> dict:
    """One benchmark's paired comparison: {"n", "unpaired", "metrics": {...}, "mcnemar": {"b","c","p"}?}."""
    bench = benchmark(name, trained or base)
    base_by, trained_by = {str(it["id"]): it for it in base}, {str(it["id"]): it for it in trained}
    shared = sorted(set(base_by) & set(trained_by))
    if not shared:
        raise InputError(f"{name}: the two models share no item ids")
    b_items, t_items = [base_by[i] for i in shared], [trained_by[i] for i in shared]
    judges = [sorted({it["judge_model"] for it in items if it.get("judge_model")}) for items in (b_items, t_items)]
    if judges[0] != judges[1]:  # a judged score moves with the judge: only the same judge makes a fair delta
        raise InputError(f"{name}: base was judged by {', '.join(judges[0]) or 'no judge'}, trained by "
                         f"{', '.join(judges[1]) or 'no judge'}; judge both with the same model")
    result = {"n": len(shared), "unpaired": len(base_by) + len(trained_by) - 2 * len(shared),
              "metrics": paired_bootstrap(bench.units(b_items), bench.units(t_items), bench.headline,
                                          resamples=resamples, seed=seed, name=name)}
    if bench.correct is not None:
        pairs = [(bench.correct(b), bench.correct(t)) for b, t in zip(b_items, t_items)]
        b_only = sum(b and not t for b, t in pairs)
        t_only = sum(t and not b for b, t in pairs)
        result["mcnemar"] = {"b": b_only, "c": t_only, "p": mcnemar_exact(b_only, t_only)}
    return result


def _number(x: float) -> str:
    """A metric as the tables and the headline show it."""
    return f"{x:.{DIGITS}g}" if abs(x) < 1 else f"{x:.2f}"


def markdown(comparison: dict, level: float = LEVEL) -> str:
    """One table per benchmark: metric, base, trained, delta, CI; McNemar's line under it."""
    parts = []
    for name, result in comparison.items():
        note = getattr(BENCHMARKS.get(name), "NOTE", None)  # e.g. red-teaming's: the rubric is ours
        rows = [f"### {name} ({result['n']} items paired" +
                (f", {result['unpaired']} unpaired left out)" if result["unpaired"] else ")"), "",
                *([note, ""] if note else []),
                f"| metric | base | trained | delta | {round(100 * level)}% CI (paired bootstrap) |",
                "|---|---:|---:|---:|---|"]
        for metric, m in result["metrics"].items():
            rows.append(f"| {metric} | {_number(m['base'])} | {_number(m['trained'])} | {m['delta']:+.4g} | "
                        f"[{m['ci'][0]:+.4g}, {m['ci'][1]:+.4g}] |")
        if "mcnemar" in result:
            mc = result["mcnemar"]
            rows += ["", f"McNemar exact test: {mc['b']} items right only for base, {mc['c']} only for "
                         f"trained, p = {mc['p']:.3g}."]
        parts.append("\n".join(rows))
    return "\n\n".join(parts) + "\n"


def summary_lines(comparison: dict, level: float = LEVEL) -> list[str]:
    """One line per benchmark metric: base -> trained, the change and its CI (what `silkie run` ends with)."""
    return [f"{name} {metric}: {_number(m['base'])} -> {_number(m['trained'])} ({m['delta']:+.3g}, "
            f"{round(100 * level)}% CI [{m['ci'][0]:+.3g}, {m['ci'][1]:+.3g}])"
            for name, result in comparison.items() for metric, m in result["metrics"].items()]


def compare(base_dir: str | Path, trained_dir: str | Path, out: str | Path | None = None,
            resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """`silkie eval compare BASE_DIR TRAINED_DIR`: every benchmark both folders hold. Writes to `out`
    (default: TRAINED_DIR's parent, i.e. RUN/eval when the folders are RUN/eval/base and
    RUN/eval/trained) comparison.json, comparison.md and results.json ({benchmark: {metric: value}}
    of the trained model, which `silkie export` turns into the card's model-index). Returns the
    comparison."""
    base_dir, trained_dir = Path(base_dir), Path(trained_dir)
    out = Path(out) if out is not None else trained_dir.resolve().parent
    names = sorted(p.parent.name for p in trained_dir.glob(f"*/{ITEMS}")
                   if (base_dir / p.parent.name / ITEMS).is_file())
    if not names:
        raise InputError(f"{base_dir} and {trained_dir} share no benchmark (<benchmark>/{ITEMS} in both)")
    comparison, results = {}, {}
    for name in names:
        base, trained = load(base_dir, name), load(trained_dir, name)
        comparison[name] = compare_benchmark(name, base, trained, resamples=resamples, seed=seed)
        bench = benchmark(name, trained)
        results[name] = {m: round(v, DIGITS) for m, v in
                         bench.headline({s: _means(list(u.values())) for s, u in bench.units(trained).items()}).items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2) + "\n")
    (out / "comparison.md").write_text(markdown(comparison))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return comparison
