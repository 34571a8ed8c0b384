"""`silkie generate`: answer every instruction with K models of the pool.

Resumable at the grain of (id, model): a rerun skips pairs already in the output (or any shard
of it), and a request cache in the run folder means an identical request is never recomputed.
Models run one after another, so only one is in memory at a time; a model with nothing left to
do is never loaded.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from silkie.pool.config import PoolConfig, assign, make_backend

CHUNK = 64  # requests handed to a backend at once: big enough to batch, small enough to resume

__all__ = ["GenerateConfig", "GenerateSummary", "generate", "in_shard", "run"]


@dataclass
class GenerateConfig:
    """The generate stage: `silkie generate`'s flags and `silkie run`'s `generate:` section."""
    pool: str = field(default="mini", metadata={"help": "pool preset name (configs/pool/) or YAML file"})
    per_instruction: int | None = field(default=None, metadata={
        "range": (1, None), "help": "models per instruction (default: the pool's)"})


def run(cfg: GenerateConfig, run_dir: str | Path, seed: int = 0, pool: PoolConfig | None = None, log=print) -> dict:
    """The stage: answer RUN/instructions.jsonl into RUN/completions.jsonl with `pool` (default: the
    config's; later rounds pass one whose base member is the previous round's model)."""
    from silkie.io import count_lines
    from silkie.layout import RunLayout
    from silkie.pool.config import load_pool

    layout, pool = RunLayout(run_dir), pool or load_pool(cfg.pool)
    summary = generate(pool, layout.instructions, layout.completions, per_instruction=cfg.per_instruction, seed=seed)
    log(summary.table())
    return {"completions": count_lines(layout.completions), "pool": [m.name for m in pool.models]}


@dataclass
class GenerateSummary:
    out: Path
    per_model: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    bad_instructions: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'model':<24}{'assigned':>9}{'new':>7}{'cached':>8}{'errors':>8}{'skipped':>9}"]
        for model, c in sorted(self.per_model.items()):
            lines.append(f"{model:<24}{c['assigned']:>9}{c['new']:>7}{c['cached']:>8}{c['errors']:>8}{c['done']:>9}")
        lines += [f"bad instruction: {reason}" for reason in self.bad_instructions]
        return "\n".join(lines)


def in_shard(instruction_id: str, shard: tuple[int, int]) -> bool:
    index, count = shard
    return int(hashlib.sha256(instruction_id.encode()).hexdigest(), 16) % count == index


def generate(pool: PoolConfig, instructions: str | Path, out: str | Path, per_instruction: int | None = None,
             seed: int = 0, shard: tuple[int, int] = (0, 1), cache: str | Path | None = None,
             progress: bool = True) -> GenerateSummary:
    from tqdm import tqdm

    from silkie.cache import RequestCache
    from silkie.io import JsonlWriter, read_checked, read_jsonl, shard_path, stage_files

    instructions, out = Path(instructions), Path(out)
    k = per_instruction or pool.per_instruction
    target = shard_path(out, *shard) if shard[1] > 1 else out
    summary = GenerateSummary(target)
    todo: dict[str, list[dict]] = defaultdict(list)
    records = []
    for _, record in read_checked(instructions, "instruction", images=False):
        if isinstance(record, Exception):
            summary.bad_instructions.append(str(record))
        elif in_shard(record["id"], shard):
            records.append(record)
    with JsonlWriter(target, key=("id", "model")) as writer, \
            RequestCache(cache or out.parent / "cache.sqlite") as request_cache:
        for other in stage_files(out):  # pairs finished by another shard (or the unsharded run) count as done
            if other != target:
                writer.done |= {(r["id"], r["model"]) for _, r in read_jsonl(other) if isinstance(r, dict)}
        for record in records:
            for model in assign(record["id"], pool, k, seed):
                summary.per_model[model]["assigned"] += 1
                if (record["id"], model) in writer:
                    summary.per_model[model]["done"] += 1
                else:
                    todo[model].append(record)
        for spec in pool.models:
            pending = todo.get(spec.name, [])
            if not pending:
                continue
            backend = _Lazy(spec)  # loaded at the first cache miss: a fully cached model costs nothing
            bar = tqdm(total=len(pending), desc=spec.name, unit="item", disable=not progress, leave=False)
            for start in range(0, len(pending), CHUNK):
                chunk = pending[start:start + CHUNK]
                for completion, how in _answer(backend, spec, chunk, instructions.parent, request_cache):
                    writer.write(completion)
                    summary.per_model[spec.name][how] += 1
                writer.flush()
                bar.update(len(chunk))
            bar.close()
            del backend  # free the weights before the next model loads
    return summary


class _Lazy:
    def __init__(self, spec):
        self.spec, self.backend = spec, None

    def generate(self, requests, params):
        self.backend = self.backend or make_backend(self.spec)
        return self.backend.generate(requests, params)


def _answer(backend, spec, records: list[dict], root: Path, request_cache):
    """(completion record, "new" | "cached" | "errors") for each record, in order."""
    from silkie.cache import request_key
    from silkie.io import load_image, resolve_inside
    from silkie.pool.base import Request
    from silkie.schema import user_turn

    params = spec.generation
    generation = {**asdict(params), "backend": spec.backend, "model": spec.model, "revision": spec.revision,
                  "adapter": spec.adapter}
    keys, requests, answers = {}, [], {}
    for record in records:
        keys[record["id"]] = request_key(model=spec.model, revision=spec.revision, adapter=spec.adapter,
                                         backend=spec.backend, image=record["image"], prompt=record["prompt"],
                                         params=asdict(params))
        hit = request_cache.get(keys[record["id"]])
        if hit is not None:
            answers[record["id"]] = (hit["response"], None, "cached")
            continue
        try:
            file = resolve_inside(root, record["image"])
            image = load_image(file)
        except ValueError as error:
            answers[record["id"]] = ("", str(error), "errors")
            continue
        requests.append(Request(record["id"], image, user_turn(record["prompt"]), file))
    for result in backend.generate(requests, params) if requests else []:
        if result.error is None:
            request_cache.put(keys[result.key], {"response": result.text, "usage": result.usage})
            answers[result.key] = (result.text, None, "new")
        else:
            answers[result.key] = ("", result.error, "errors")
    for record in records:
        response, error, how = answers[record["id"]]
        yield {"id": record["id"], "model": spec.name, "response": response, "generation": generation,
               "error": error}, how
