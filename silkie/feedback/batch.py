"""`--batch`: first asks go through the provider's Batch API, at its lower price.

The batch path only fills the request cache. Each line's `custom_id` is the cache key of the
request it carries (then `:` and its worst-case prompt tokens, the bound its usage is checked
against), so returned answers land in the cache, and the ordinary pass that follows finds them
there and writes the records; only re-asks go online. A first ask the batches did not answer (a
failed line, a reply past its request's bounds, the budget) is deferred, never sent online at full
price: rerun to batch it.

Resumable: the batches in flight are listed in a small state file beside the output. A rerun
collects those before it submits anything, so a batch is paid for once. (A kill in the moment
between a batch's creation and the state file's update would orphan that batch.)
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from silkie.feedback.base import Deferred, Item
from silkie.feedback.openai_judge import OpenAIJudge, api_key, checked_usage, oversized
from silkie.openai_api import file_data_url

# The provider's limits on one batch input file; the byte limit leaves room for the multipart wrapping.
MAX_REQUESTS = 50_000
MAX_BYTES = 190 * 2**20
DONE = ("completed", "failed", "expired", "cancelled")


def state_path(out: str | Path) -> Path:
    """RUN/annotations.jsonl -> RUN/annotations.batches.json"""
    out = Path(out)
    return out.with_name(f"{out.stem}.batches.json")


def run_batches(judge: OpenAIJudge, items: Iterable[Item], state: str | Path, progress: bool = True) -> Counter:
    """Collect batches an earlier run left, batch every uncached first ask, wait, collect; returns counts."""
    return asyncio.run(_run(judge, items, Path(state), progress))


async def _run(judge: OpenAIJudge, items: Iterable[Item], path: Path, progress: bool) -> Counter:
    stats: Counter = Counter()
    state = json.loads(path.read_text()) if path.exists() else {"batches": []}
    holds: dict[str, float] = {}  # batch id -> budget held for it by this run
    async with judge.client(api_key(judge.config)) as client:
        await _collect(client, judge, state, path, holds, stats, progress)
        await _submit(client, judge, items, state, path, holds, stats)
        await _collect(client, judge, state, path, holds, stats, progress)
    return stats


def _save(state: dict, path: Path) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(state, indent=1))
    os.replace(temp, path)  # never half a state file: it holds the only record of paid batches


async def _submit(client, judge, items, state, path, holds, stats) -> None:
    """Batch every uncached first ask of `items`, in files of at most MAX_REQUESTS lines and MAX_BYTES."""
    scratch = path.with_name(path.stem + ".input.jsonl")
    lines = size = 0
    held = 0.0
    out = open(scratch, "wb")  # noqa: SIM115 - closed and reopened at each file's end
    try:
        for line, cost in _lines(judge, items, stats):
            if lines and (lines == MAX_REQUESTS or size + len(line) > MAX_BYTES):
                out.close()
                holds[await _create(client, scratch, lines, state, path)] = held
                out, lines, size, held = open(scratch, "wb"), 0, 0, 0.0  # noqa: SIM115
            out.write(line)
            lines, size, held = lines + 1, size + len(line), held + cost
        out.close()
        if lines:
            holds[await _create(client, scratch, lines, state, path)] = held
    finally:
        out.close()
        scratch.unlink(missing_ok=True)


def _lines(judge: OpenAIJudge, items: Iterable[Item], stats: Counter):
    """(batch file line, budget held for it) for each first ask the cache lacks, each request once."""
    seen = set()
    for item in items:
        url = None
        for request, messages in judge.conversations(item):
            key = judge.key(item, request, messages)
            if key in seen or judge.cache.get(key) is not None:
                continue
            bounds = judge.worst_tokens(messages)
            try:
                cost = judge.ledger.reserve(*bounds, discount=judge.config.batch_discount)
            except Deferred:
                stats["batch_budget"] += 1
                continue
            try:
                url = url or file_data_url(item.image, judge.config.max_image_side)
            except ValueError:
                judge.ledger.release(cost)
                break  # a bad image: the online pass records the item's error
            seen.add(key)
            stats["batched"] += 1
            body = judge.body(request, messages, url)
            yield json.dumps({"custom_id": f"{key}:{bounds[0]}", "method": "POST", "url": "/v1/chat/completions",
                              "body": body}).encode() + b"\n", cost


async def _create(client, scratch: Path, lines: int, state: dict, path: Path) -> str:
    with open(scratch, "rb") as f:
        uploaded = await client.files.create(file=(scratch.name, f), purpose="batch")
    batch = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    state["batches"].append({"id": batch.id, "input_file_id": uploaded.id, "requests": lines, "collected": False})
    _save(state, path)
    return batch.id


async def _collect(client, judge, state, path, holds, stats, progress) -> None:
    from tqdm import tqdm

    waiting = [b for b in state["batches"] if not b["collected"]]
    bar = tqdm(total=sum(b["requests"] for b in waiting), desc="batch", unit="request", disable=not progress,
               leave=False)
    finished: dict[str, int] = {}  # batch id -> requests it has answered or failed
    while waiting:
        for entry in waiting:
            batch = await client.batches.retrieve(entry["id"])
            counts = batch.request_counts
            finished[entry["id"]] = (counts.completed + counts.failed) if counts else 0
            if batch.status not in DONE:
                continue
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    async with client.files.with_streaming_response.content(file_id) as response:
                        async for line in response.iter_lines():
                            if line.strip():
                                _store(judge, json.loads(line), stats)
            judge.ledger.release(holds.pop(entry["id"], 0.0))
            entry.update(collected=True, status=batch.status)
            _save(state, path)
        bar.update(sum(finished.values()) - bar.n)
        waiting = [b for b in waiting if not b["collected"]]
        if waiting:
            await asyncio.sleep(judge.config.batch_poll_s)
    bar.close()


def _store(judge: OpenAIJudge, line: dict, stats: Counter) -> None:
    """One result line into the cache, charged at the batch price; a failed line is only counted, and
    one past its request's bounds (usage, size) is charged the worst case and counted, never cached."""
    response = line.get("response") or {}
    body = response.get("body") or {}
    choices = body.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content")
    if response.get("status_code") != 200 or not isinstance(text, str):
        stats["batch_failed"] += 1
        return
    key, _, prompt_bound = line["custom_id"].partition(":")  # no bound: a batch sent before bounds were
    max_tokens = judge.config.generation.max_new_tokens
    reported = body.get("usage") if isinstance(body.get("usage"), dict) else None
    usage, problem = checked_usage(reported, (int(prompt_bound) if prompt_bound.isdigit() else None, max_tokens))
    usage["cost_usd"] = judge.ledger.charge(0.0, usage, discount=judge.config.batch_discount)
    if problem or oversized(text, max_tokens):
        stats["batch_failed"] += 1
        stats["batch_out_of_bounds"] += 1
        return
    judge.cache.put(key, {"text": text, "usage": usage})
    stats["batch_answers"] += 1
