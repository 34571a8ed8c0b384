"""Mini benchmarks for the mini world, and the runner that answers and scores them.

mini-MME: yes/no pairs about world scenes, phrased as MME phrases them (two per image, opposite
answers), in MME's perception subtasks existence, count, color and position (balanced: a quarter of
the images each), scored by `eval/mme.py`'s exact rules. mini-MMHal: the world's open questions
(describe, count, color, position; a quarter each), rated by the scene judge and mapped to MMHal's
0-6 scale (`mmhal_rating`), scored by `eval/mmhal.py`.

Items are drawn in the world (`silkie.world.benchmark`, re-exported here), since `world make` must
leave them out of every run: a dedicated seed, MINI_SEED (3000), and no item whose (scene content,
prompt) occurs among the pool's training items. The overlap left — 0 by construction, recounted
independently — is reported in DIR/mini.json.

Answers come from the pool backend (`TransformersBackend`, greedy, a LoRA adapter applied without
merging) and are saved per item by `runner.predict` in `DIR/<benchmark>/predictions.jsonl`, so a
rerun only generates what is missing — and loads no model when nothing is. Scored items and
scores go to `DIR/mme/` and `DIR/mmhal/` (`items.jsonl`, `scores.json`), the layout
`silkie eval compare` reads.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from silkie import InputError
from silkie.eval import mme, mmhal
from silkie.eval.common import write_scored
from silkie.eval.runner import PREDICTIONS, predict
from silkie.pool.base import GenerationParams
from silkie.pool.transformers_backend import TransformersBackend
from silkie.world.benchmark import (  # noqa: F401 - MMHAL_KINDS: imported from here by callers
    MINI_SEED,
    MME_N,
    MMHAL_KINDS,
    MMHAL_N,
    benchmark_keys,
    mme_records,
    mmhal_records,
    overlap,
)
from silkie.world.judge import SceneJudge
from silkie.world.scenes import Scene, render
from silkie.world.train_pool import MAX_NEW_TOKENS, TRAIN_SEED

SUMMARY = "mini.json"
BATCH = 32  # the backend's batch size (a ceiling: halved on out-of-memory)


def shared_with(instructions: list[Path], n: int = MME_N, n_mmhal: int = MMHAL_N, seed: int = MINI_SEED) -> int:
    """How many mini-world instructions in these files share (scene content, prompt) with the
    benchmarks' items: the overlap a run's report states (0 by construction of `world make`)."""
    from silkie.io import read_jsonl

    keys = benchmark_keys(n, n_mmhal, seed)
    return sum((Scene.from_dict(r["meta"]["scene"]).key(), r["prompt"]) in keys
               for path in instructions for _, r in read_jsonl(path)
               if isinstance(r, dict) and "scene" in (r.get("meta") or {}))


# -- scoring -------------------------------------------------------------------------------------

def mmhal_rating(helpfulness: int, faithfulness: int) -> int:
    """The scene judge's 1-5 Helpfulness (H) and Visual Faithfulness (F) on MMHal's 0-6 scale
    (3-6: no hallucination, 0-2: hallucination).

    F 5 (every claim true): H 5 -> 6, H 4 -> 5, H 3 -> 4, H 1-2 -> 3 (true but uninformative).
    F 4 (one near miss, e.g. "top" for "top left"): as F 5 but at most 5.
    F 3: with H 1 the judge found no claim to check (no number, no colour, a refusal) -> 3;
         otherwise some claims are false (invented shapes beside real ones, two misplacements,
         right and wrong colours) -> 2.
    F 2 (a false claim, e.g. an invented thing, a count off by one): 2 if partly informative
         (H >= 2), else 1.
    F 1 (mostly false, or nothing about the image): 1 if H >= 2, else 0.
    The judge caps F at 2 for any invented thing outside descriptions, and at 3 in a description
    only when it names more real things than invented ones (H >= 2 then), so an answer with an
    invented thing always maps to 2 or less.
    """
    if faithfulness >= 4:
        return min({5: 6, 4: 5, 3: 4}.get(helpfulness, 3), 6 if faithfulness == 5 else 5)
    if faithfulness == 3:
        return 3 if helpfulness <= 1 else 2
    if faithfulness == 2:
        return 2 if helpfulness >= 2 else 1
    return 1 if helpfulness >= 2 else 0


def mme_item(record: dict, prediction: dict) -> dict:
    response = prediction.get("response") or ""
    pred = mme.answer(response)
    truth = "yes" if record["meta"]["truth"] else "no"
    item = {"id": record["id"], "subtask": record["meta"]["subtask"], "image": record["id"].rsplit("-", 1)[0],
            "question": record["prompt"], "answer": truth, "response": response, "pred": pred,
            "correct": pred == truth}
    return {**item, "error": prediction["error"]} if prediction.get("error") else item


def mmhal_item(record: dict, prediction: dict, judge: SceneJudge | None = None) -> dict:
    response = prediction.get("response") or ""
    rated = (judge or SceneJudge()).rate_one(record, response)
    helpful, faithful = (rated[a] for a in ("Helpfulness", "Visual Faithfulness"))
    rating = mmhal_rating(int(helpful["Rating"]), int(faithful["Rating"]))
    item = {"id": record["id"], "type": record["meta"]["task"], "score": rating, "valid": True,
            "hallucination": rating < mmhal.HALLUCINATION_BELOW, "question": record["prompt"],
            "gt_answer": record["meta"]["answer"], "response": response,
            "judge": {"Helpfulness": helpful, "Visual Faithfulness": faithful}}
    return {**item, "error": prediction["error"]} if prediction.get("error") else item


# -- generation ----------------------------------------------------------------------------------

def _render_scene():
    """The image of a record's scene; a yes/no pair shares its scene (adjacent records), drawn once."""
    last = {}

    def image(record):
        scene_id = record["id"].rsplit("-", 1)[0]
        if scene_id not in last:
            last.clear()
            last[scene_id] = render(Scene.from_dict(record["meta"]["scene"]))
        return last[scene_id]
    return image


def run_mini(model: str, out: str | Path, adapter: str | None = None, n: int = MME_N, seed: int = MINI_SEED,
             n_mmhal: int = MMHAL_N, batch_size: int = BATCH, dtype: str | None = None, log=print) -> dict:
    """`silkie eval mini`: answer, score and save mini-MME (`n` questions) and mini-MMHal (`n_mmhal`)
    for `model` (a path, Hub id or world:NAME) with an optional LoRA `adapter`, into `out`.
    Resumable. Returns the summary also written to `out/mini.json`."""
    out = Path(out)
    if seed == TRAIN_SEED:
        raise InputError(f"seed {seed} is the pool's training seed; the mini benchmarks need held-out items")
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)  # greedy
    loaded = []

    def backend():  # loaded at the first missing answer: a finished folder never loads the model
        if not loaded:
            loaded.append(TransformersBackend(model, model, adapter=adapter, batch_size=batch_size, dtype=dtype))
        return loaded[0]

    summary = {"model": model, "adapter": adapter, "seed": seed, "train_seed": TRAIN_SEED,
               "generation": {"greedy": params.greedy, "max_new_tokens": params.max_new_tokens}}
    generated = 0
    judge = SceneJudge()
    for name, (records, dropped) in (("mme", mme_records(n, seed)), ("mmhal", mmhal_records(n_mmhal, seed))):
        answers, added = predict(out / name / PREDICTIONS, records, model, adapter, backend, params,
                                 image=_render_scene(), log=log)
        generated += added
        if name == "mme":
            items = [mme_item(r, answers[r["id"]]) for r in records]
            scores = write_scored(out, name, items, mme.score)
            counts = {"questions": len(items), "images": len(items) // 2,
                      "subtasks": dict(Counter(it["subtask"] for it in items[::2])),  # images per subtask
                      "perception": scores["perception"]}
        else:
            items = [mmhal_item(r, answers[r["id"]], judge) for r in records]
            scores = write_scored(out, name, items, mmhal.score)
            counts = {"questions": len(items), "types": dict(Counter(it["type"] for it in items)),
                      "score": scores["score"], "hallucination_rate": scores["hallucination_rate"]}
        summary[name] = {**counts, "overlap": overlap(records), "dropped_for_overlap": dropped,
                         "errors": sum("error" in it for it in items)}
    summary["overlap"] = summary["mme"]["overlap"] + summary["mmhal"]["overlap"]
    summary["generated"] = generated
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
