"""Judging the two panes' answers, and the ratings table the page shows.

Two judges, tried in this order: the scene judge, which rates an answer against a mini-world
scene's ground truth and so needs to know the scene (one of the page's examples, or any scene of
the run the Space serves, recognised by its pixels); then the OpenAI-compatible judge of
silkie.feedback, for any image, when SILKIE_JUDGE_MODEL is set. That one is paid per call, so its
calls are counted against the Space's allowance (Settings.judge_calls_per_visitor and _per_day).
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import random
import threading
import time
from pathlib import Path

from silkie import InputError
from silkie.schema import ASPECTS
from silkie.space.config import Settings, run_folder
from silkie.space.inputs import check_answers, check_prompt, read_image

__all__ = ["EXAMPLE_SEED", "HOUR", "DAY", "Referee", "Allowance", "SceneIndex", "run_scenes", "pixel_key",
           "world_examples", "world_instruction", "openai_ratings", "cell", "ratings_table"]

EXAMPLE_SEED = 4000  # world items the pool never trained (1000) or was measured (2000, 3000) on
HOUR, DAY = 3600.0, 86400.0


def pixel_key(image) -> str:
    """Names an image by its pixels, so a re-encoded copy of a scene is still recognised."""
    return hashlib.sha256(f"{image.size}".encode() + image.tobytes()).hexdigest()[:16]


def same_prompt(prompt: str) -> str:
    return " ".join(prompt.lower().split())


class Referee:
    """Rates the answers in the panes, each column of the table belonging to the pane it rates."""

    def __init__(self, config: Settings):
        self.config = config  # its timeout is read at call time
        self.examples = world_examples()
        self.scenes = SceneIndex(self.examples, run_folder(config))
        self.allowance = Allowance(config.judge_calls_per_visitor, config.judge_calls_per_day)

    def judge(self, image, prompt, answers: dict[str, str], visitor: str = "local") -> str:
        """Markdown: each answer's rating and rationale on the three aspects, and who rated them.
        `answers` maps a pane's name to its answer; `image` is an upload's path or a PIL image;
        `visitor` names who asks, for the paid judge's allowance (see inputs.visitor)."""
        image, prompt = read_image(image), check_prompt(prompt)
        names, texts = list(answers), check_answers(list(answers.values()))
        scene, instruction = self.scenes.find(image, prompt)
        if instruction:
            from silkie.world.judge import SceneJudge

            return ratings_table(names, SceneJudge().rate(instruction, texts),
                                 "the scene judge, against the scene's ground truth")
        if os.environ.get("SILKIE_JUDGE_MODEL"):
            self.allowance.take(visitor)  # counted once let through, whatever the judge then does
            return ratings_table(names, openai_ratings(image, prompt, texts, self.config.timeout),
                                 f"{os.environ['SILKIE_JUDGE_MODEL']} (OpenAI-compatible judge)")
        why = ("the scene judge knows this scene, but not this question: ask it as the examples do "
               "(describe, count, colour, position, yes/no)") if scene else \
            "the scene judge only knows the mini world's scenes (the examples and the served run's), not this image"
        raise InputError(f"Cannot judge: {why}. To judge anything, set SILKIE_JUDGE_MODEL "
                         "(with OPENAI_API_KEY, or SILKIE_JUDGE_BASE_URL for a server of your own).")


class Allowance:
    """The paid judge's calls: at most `per_visitor` from one visitor in any HOUR, and `per_day` from
    all visitors together in any DAY. Remembers the last day's calls only (at most `per_day`)."""

    def __init__(self, per_visitor: int, per_day: int, clock=time.monotonic):
        self.per_visitor, self.per_day, self.clock = per_visitor, per_day, clock
        self.calls: collections.deque[tuple[float, str]] = collections.deque()  # (time, visitor), oldest first
        self.lock = threading.Lock()  # Gradio runs handlers in threads

    def take(self, visitor: str) -> None:
        """Count a call by `visitor`, or raise InputError saying when one will be allowed."""
        if not (self.per_visitor and self.per_day):
            raise InputError("The paid judge is turned off on this Space (0 calls allowed); the examples' scene "
                             "judge still rates answers.")
        with self.lock:
            now = self.clock()
            while self.calls and self.calls[0][0] <= now - DAY:
                self.calls.popleft()
            if len(self.calls) >= self.per_day:
                raise InputError(f"The judge has reached this Space's limit of {self.per_day} calls a day; try "
                                 f"again in {_wait(self.calls[0][0] + DAY - now)} (the examples' scene judge is free).")
            mine = [at for at, who in self.calls if who == visitor and at > now - HOUR]
            if len(mine) >= self.per_visitor:
                raise InputError(f"You have used your judge calls for this hour ({self.per_visitor} a visitor); try "
                                 f"again in {_wait(mine[0] + HOUR - now)} (the examples' scene judge is free).")
            self.calls.append((now, visitor))


def _wait(seconds: float) -> str:
    minutes = max(math.ceil(seconds / 60), 1)
    return f"{minutes} minute{'s' if minutes > 1 else ''}" if minutes < 120 else f"{math.ceil(minutes / 60)} hours"


class SceneIndex:
    """The scenes the scene judge can recognise, by pixel_key: the examples from the start, and the
    run's own scenes (with the instruction records written about them) read on the first image
    that is not an example, once, since that decodes every scene image of the run."""

    def __init__(self, examples: list[dict], run: Path | None):
        self.known = {pixel_key(example["image"]): (example["scene"], {}) for example in examples}
        self.run, self.lock, self.read = run, threading.Lock(), run is None

    def find(self, image, prompt: str):
        """(the scene shown, the instruction record for `prompt` about it), each None if unknown."""
        key = pixel_key(image)
        if key not in self.known and not self.read:
            self._read_run()
        scene, records = self.known.get(key, (None, {}))
        if scene is None:
            return None, None
        return scene, records.get(same_prompt(prompt)) or world_instruction(scene, prompt)

    def _read_run(self) -> None:
        with self.lock:  # a second visitor's request waits for the one reading, then finds it done
            if not self.read:
                try:
                    for key, (scene, records) in run_scenes(Path(self.run)).items():
                        self.known.setdefault(key, (scene, {}))[1].update(records)
                finally:
                    self.read = True  # read once, whatever happened


def run_scenes(run: Path) -> dict:
    """{pixel_key: (scene, {prompt: record})} for the mini-world records of the run's instructions.jsonl."""
    from silkie.io import ImageError, load_image, read_jsonl, resolve_inside
    from silkie.world.scenes import Scene

    found, keys = {}, {}  # keys: a yes/no pair shares its image, decoded once
    if not (run / "instructions.jsonl").is_file():
        return found
    for _, record in read_jsonl(run / "instructions.jsonl"):
        try:
            scene = Scene.from_dict(record["meta"]["scene"])  # only mini-world records have one
            if record["image"] not in keys:
                keys[record["image"]] = pixel_key(load_image(resolve_inside(run, record["image"])))
            key = keys[record["image"]]
        except (KeyError, TypeError, ValueError, ImageError, OSError):
            continue  # not a mini-world record, or its image is gone: that scene stays unknown
        found.setdefault(key, (scene, {}))[1][same_prompt(record["prompt"])] = record
    return found


def world_examples(n: int = 6) -> list[dict]:
    """One mini-world item of each task kind: {"image", "prompt", "kind", "scene"}."""
    from silkie.io import load_image
    from silkie.world.make import generate, scene_image

    examples, kinds = [], set()
    for record, scene in generate(60, seed=EXAMPLE_SEED):
        kind = record["meta"]["task"]
        if kind not in kinds and len(examples) < n:
            kinds.add(kind)
            examples.append({"image": load_image(scene_image(scene)), "prompt": record["prompt"], "kind": kind,
                             "scene": scene})
    return examples


def world_instruction(scene, prompt: str) -> dict | None:
    """The record the mini world would write for this question about this scene, or None. Found by
    drawing the scene's tasks under many seeds: the world has few phrasings, so most are met."""
    from silkie.world.tasks import TASK_MIX, make_tasks

    wanted = same_prompt(prompt)
    for kind in TASK_MIX:
        for seed in range(64):
            for task in make_tasks(scene, kind, random.Random(seed)):
                if same_prompt(task.prompt) == wanted:  # the meta as world.make writes it
                    meta = {"task": task.kind, "answer": task.answer, **task.meta, "scene": scene.to_dict()}
                    return {"prompt": task.prompt, "meta": meta}
    return None


def openai_ratings(image, prompt: str, answers: list[str], timeout: float) -> list[dict]:
    """Ratings from silkie.feedback's OpenAI judge: SILKIE_JUDGE_MODEL at SILKIE_JUDGE_BASE_URL (default:
    the OpenAI API), key from OPENAI_API_KEY (none sent when it is unset, for a keyless server)."""
    import dataclasses
    import tempfile

    from silkie.feedback.base import Item
    from silkie.feedback.openai_judge import OpenAIJudge, load_judge_config

    config = load_judge_config("gpt-4o", {"model": os.environ["SILKIE_JUDGE_MODEL"], "timeout": timeout,
                                          "base_url": os.environ.get("SILKIE_JUDGE_BASE_URL"), "max_retries": 1})
    if not os.environ.get("OPENAI_API_KEY"):
        config = dataclasses.replace(config, api_key_env=None)
    # The feedback judge reads its items' images from files (it encodes them lazily, off the event
    # loop), so an image held in memory is written out once for the one call.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "image.png"
        image.save(path)
        item = Item("space", {"prompt": prompt, "image": pixel_key(image)}, path, answers)
        verdict = next(OpenAIJudge(config).judge([item]))
    if not verdict.ratings:
        raise InputError(f"The judge gave no ratings: {verdict.error or 'the provider failed; try again'}")
    return verdict.ratings


def cell(text) -> str:
    """Text that stays inside one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "/")


def ratings_table(names: list[str], ratings: list[dict], judge: str) -> str:
    """An aspect per row, a column per answer: `ratings[i]` is shown under `names[i]`."""
    lines = [f"Rated by {judge}.", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {aspect} | " + " | ".join(f"**{cell(r[aspect]['Rating'])}** · {cell(r[aspect]['Rationale'])}"
                                            for r in ratings) + " |" for aspect in ASPECTS]
    return "\n".join(lines)
