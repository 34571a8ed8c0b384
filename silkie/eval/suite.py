"""Every benchmark `silkie run` can evaluate, by name: how to run it and which options it takes.

`mini` (held-out mini-world items, scored by the scene judge) is registered like the releases
(MME, MMHal-Bench, MM-Vet, RTVLM), so the pipeline config's `eval.benchmarks` is checked against one
table when it is loaded, before any stage runs, and a typo in an option never waits for the eval
stage. The options are the flags of `silkie eval NAME`, spelt with underscores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from silkie import InputError

__all__ = ["OPTIONS", "EvalConfig", "check", "evaluate", "run"]

_JUDGE = ("judge_model", "judge_base_url", "judge_template", "judge_api_key_env")
_ANSWER = ("data", "batch_size", "max_new_tokens")
# name -> the options it takes; `data` is required by every release
OPTIONS = {
    "mini": ("n", "n_mmhal", "seed", "batch_size"),
    "mme": _ANSWER,
    "mmhal": _ANSWER + _JUDGE,
    "mmvet": _ANSWER + _JUDGE + ("runs",),
    "redteam": _ANSWER + _JUDGE,
}


def check(name: str, options: dict | None, where: str = "eval.benchmarks") -> dict:
    """`options` of benchmark `name`, or an InputError naming the first thing wrong."""
    if name not in OPTIONS:
        raise InputError(f"{where}: unknown benchmark {name!r} (known: {', '.join(OPTIONS)})")
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS[name]))
    if unknown:
        raise InputError(f"{where}.{name}: unknown option {unknown[0]!r} (known: {', '.join(OPTIONS[name])})")
    if name != "mini" and "data" not in options:
        raise InputError(f"{where}.{name}: needs `data: PATH|HUB_ID`")
    return options


@dataclass
class EvalConfig:
    """The eval stage: `silkie run`'s `eval:` section (each benchmark is also `silkie eval NAME`)."""
    # benchmark name -> its options; `mini` needs none (held-out world items)
    benchmarks: dict = field(default_factory=lambda: {"mini": {}})

    def validate(self, where: str) -> None:
        for name, options in self.benchmarks.items():
            check(name, options, where=f"{where}: eval.benchmarks")


def run(cfg: EvalConfig, run_dir: str | Path, models: dict, log=print) -> dict:
    """The stage: evaluate every model variant ({"base": (model, None), "trained": (model, adapter), ...})
    on every benchmark into RUN/eval/<variant>/, then compare each with the base (the base's answers
    are reused when they are already there). Returns each variant's headline metrics."""
    from silkie.eval.compare import compare
    from silkie.layout import RunLayout

    layout = RunLayout(run_dir)
    for name, options in cfg.benchmarks.items():
        for variant, (model, adapter) in models.items():
            log(f"eval {name}: {variant} ({model}{' + ' + str(adapter) if adapter else ''})")
            evaluate(name, model, adapter and str(adapter), layout.evaluated(variant), options, log)
    summary = {}
    for variant in models.keys() - {"base"}:
        comparison = compare(layout.evaluated("base"), layout.evaluated(variant), out=layout.comparison(variant))
        summary[variant] = {bench: result["metrics"] for bench, result in comparison.items()}
    return summary


def evaluate(name: str, model: str, adapter: str | None, out: Path, options: dict | None, log=print) -> dict:
    """Answer and score benchmark `name` for `model` (+ an unmerged LoRA `adapter`) into `out/<name>/`."""
    options = check(name, options)
    if name == "mini":
        from silkie.eval.mini import run_mini

        return run_mini(model, out, adapter=adapter, log=log, **options)
    from silkie.eval.registry import BENCHMARKS
    from silkie.eval.runner import Grader, model_spec

    module = BENCHMARKS[name]
    spec = model_spec(model, adapter=adapter, batch_size=options.pop("batch_size", 16),
                      max_new_tokens=options.pop("max_new_tokens", module.MAX_NEW_TOKENS))
    data, extra = options.pop("data"), {}
    if "runs" in options:
        extra["runs"] = options.pop("runs")
    if name != "mme":
        settings = {key: options.pop(f"judge_{key}") for key in ("model", "base_url", "api_key_env")
                    if f"judge_{key}" in options}
        extra["judge"] = Grader.from_file(options.pop("judge_template", None), module.PLACEHOLDERS, **settings)
    return module.run(spec, data, out, log=log, **extra)
