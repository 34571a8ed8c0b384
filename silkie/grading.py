"""What judges share, kept below the stages: the interface every judge offers, and MME's reading of
a yes/no reply.

The judges live in different layers — the OpenAI judge in feedback/, the scene judge in world/, which
feedback/ and eval/ build on — so their common interface cannot live in either package without one
importing upwards. The same holds for the yes/no rule, which MME scoring (eval/mme.py) and the scene
judge must apply alike.

A judge turns a stream of items (one instruction, its image, its responses in the order to show
them) into a stream of verdicts, in any order, matched by key. It never raises for one item: a
failed item comes back with its `error`, or `deferred` when it should be tried again later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class Item:
    key: str  # what the caller matches verdicts by
    instruction: dict  # the instruction record (prompt, image, meta)
    image: Path  # the image file, resolved inside the run folder
    responses: list[str]  # in the order the judge sees them


@dataclass
class Verdict:
    key: str
    ratings: list[dict] = field(default_factory=list)  # per response as shown: {aspect: {"Rating", "Rationale"}}
    error: str | None = None  # one line; ratings may be partial or empty when set
    deferred: str | None = None  # why it was not judged now: "budget", "provider" or "batch"; a rerun retries it
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens, cost_usd of its answers
    cached: bool = False  # every answer came from the cache: this run paid nothing for it
    reasks: int = 0  # replies that could not be read and were asked again


class Deferred(Exception):
    """Not judged now, for a reason a rerun can lift; no record is written. `reason` names it in counts."""
    reason = "provider"  # the provider failed in a way that may pass (429, 5xx, timeouts, a garbled body)


class Judge(Protocol):
    name: str  # written to record.judge.name
    prompt_version: str  # written to record.judge.prompt_version

    def judge(self, items: Iterable[Item]) -> Iterator[Verdict]:
        """One verdict per item, in any order; items are pulled lazily, so the stream may be long."""
        ...


def mme_answer(response: str) -> str:
    """"yes", "no" or "other" by MME's official rule (eval/mme.py describes it): exactly "yes" or "no"
    after lower-casing, else the first 4 characters searched for "yes", then "no"."""
    text = response.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"
