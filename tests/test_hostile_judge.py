"""A judge server that lies or stalls (issue 19): it may not spend past the budget, hang a run, or
fill the annotations and the cache.

Each test crafts the misbehaviour at the test server on 127.0.0.1 and asserts what reached it,
what the ledger charged and what each item got. No wall-time assertion: a run that used to hang
is run under a guard that fails the test if it has not returned after HANG_GUARD_S.
"""

import json
import re
import sqlite3
import threading
import time

import pytest
from openai_server import OpenAIServer, huge_reply, inflated_usage, negative_usage, prompt_text, trickle
from test_feedback_judge import (  # noqa: F401 - `environment` is an autouse fixture
    PRICE,
    TruthJudge,
    assert_truth,
    chat_requests,
    config_file,
    environment,
    make_run,
    records,
    run,
    shown,
)

from silkie.openai_api import max_reply_bytes
from silkie.pool.base import GenerationParams, Request
from silkie.pool.openai_backend import OpenAIBackend

HANG_GUARD_S = 30  # a run that has not returned by then is hanging (each finishes in seconds)
MAX_TOKENS = 200  # config_file's max_new_tokens


def upper_bill(body):
    """The most an honest server could bill a request: a token per prompt byte, the whole max_tokens."""
    return (len(prompt_text(body).encode()) * PRICE["input"] + body["max_tokens"] * PRICE["output"]) / 1e6


def guarded(call):
    """call() in a thread; fails the test if it has not returned within HANG_GUARD_S."""
    outcome = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"still running after {HANG_GUARD_S} s: a trickling reply held it"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def wait_for(condition, seconds=5.0):
    """Polls `condition` (server-side counts that trail the client by a write or two)."""
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()


def nan_usage(body, text):
    return {"prompt_tokens": float("nan"), "completion_tokens": 5, "total_tokens": 5}


@pytest.mark.parametrize("usage, reason", [
    (negative_usage, "prompt_tokens -1000000 is below zero"),
    (inflated_usage, "prompt_tokens 1000000000 is more than the "),
    (nan_usage, "prompt_tokens nan is not a count"),
])
def test_impossible_usage_is_the_items_error_charged_the_worst_case(tmp_path, usage, reason):
    root = make_run(tmp_path, 12)
    budget = 0.05  # about five requests at their worst case
    with OpenAIServer(responder=TruthJudge(), usage=usage) as server:
        summary = run(root, config_file(root, server, budget_usd=budget))
    sent = chat_requests(server)
    got = records(root)
    # Every reply was charged its worst case, so the budget stopped the run where an honest
    # server's bill would have: what went out is within the budget at any honest price.
    assert 0 < len(sent) < 12 and sum(upper_bill(r.json) for r in sent) <= budget
    assert summary.counts["deferred_budget"] == 12 - len(sent)
    # One request per item (no re-ask, no retry), each the item's error with its reason in one line.
    assert len(got) == len(sent) == summary.counts["errors"]
    for record in got:
        assert record["error"].startswith("the judge reported usage this request cannot have: " + reason)
        assert record["error"].endswith("(charged the worst case)") and "\n" not in record["error"]
        assert record["judge"]["usage"]["prompt_tokens"] < 10**6  # the worst case, not the server's figure
        assert record["judge"]["usage"]["completion_tokens"] == MAX_TOKENS
    assert 0 < summary.spend_usd <= budget
    assert summary.spend_usd == pytest.approx(sum(r["judge"]["usage"]["cost_usd"] for r in got))
    with sqlite3.connect(root / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 0  # nothing kept to be reused


def test_a_trickling_reply_is_abandoned_and_the_item_deferred(tmp_path):
    root = make_run(tmp_path, 3)
    ids = [json.loads(line)["id"] for line in (root / "instructions.jsonl").read_text().splitlines()]
    stalled = ids[1]

    def faults(number, body):
        # A 200, then a byte every 10 ms: a per-read timeout never fires, the body never ends.
        return trickle() if shown(body)[0][1] == stalled else None

    with OpenAIServer(responder=TruthJudge(), faults=faults) as server:
        config = config_file(root, server, max_retries=1, timeout=1.0)
        summary = guarded(lambda: run(root, config))
        trickled = [r for r in chat_requests(server) if r.fault is not None]
        # Both attempts (the SDK retries a timeout once here) were left by the client mid-body.
        assert len(trickled) == 2
        assert wait_for(lambda: server.abandoned["trickle"] == 2), server.abandoned
        assert summary.counts["deferred_provider"] == 1 and summary.counts["judged"] == 2
        assert {r["id"] for r in records(root)} == set(ids) - {stalled}  # deferred: no record, so a rerun retries
        assert summary.spend_usd == pytest.approx(sum(r["judge"]["usage"]["cost_usd"] for r in records(root)))
        server.faults = None
        again = run(root, config)
    assert again.counts["judged"] == 1
    for record in records(root):
        assert_truth(record)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
def test_a_reply_far_past_max_tokens_is_rejected_unread(tmp_path, declared):
    root = make_run(tmp_path, 3)
    ids = [json.loads(line)["id"] for line in (root / "instructions.jsonl").read_text().splitlines()]
    big = ids[0]

    def faults(number, body):
        return huge_reply(10 * 2**20, length=declared) if shown(body)[0][1] == big else None

    with OpenAIServer(responder=TruthJudge(), faults=faults) as server:
        summary = run(root, config_file(root, server, budget_usd=1.0))
        assert len([r for r in chat_requests(server) if r.outcome == "huge"]) == 1  # neither retried nor re-asked
        assert wait_for(lambda: server.abandoned["huge"] == 1)  # the client stopped reading
    by_id = {r["id"]: r for r in records(root)}
    limit = max_reply_bytes(MAX_TOKENS)
    error = by_id[big]["error"]
    assert error.startswith("the judge's reply is larger than max_tokens allows: the reply ")
    if declared:  # refused on its headers, before a byte of the body
        assert re.search(rf"the reply declares \d{{8}} bytes, more than the {limit} its max_tokens allows", error)
    else:  # counted as it came, and left after `limit` bytes
        assert f"the reply passed {limit} bytes, more than its max_tokens allows" in error
    assert by_id[big]["judge"]["usage"]["completion_tokens"] == MAX_TOKENS  # charged the worst case
    assert summary.counts["errors"] == 1 and summary.counts["judged"] == 2
    assert (root / "annotations.jsonl").stat().st_size < 100_000
    with sqlite3.connect(root / "cache.sqlite") as db:
        count, longest = db.execute("SELECT COUNT(*), MAX(LENGTH(value)) FROM answers").fetchone()
    assert count == 2 and longest < 10_000  # the other two items' answers, and nothing of the huge one


def test_the_pool_backend_abandons_trickles_and_rejects_huge_replies(monkeypatch):
    monkeypatch.setenv("SILKIE_TEST_KEY", "sk-pool-test")

    def faults(number, body):
        text = prompt_text(body)
        return trickle() if "stall" in text else huge_reply(10 * 2**20, length=False) if "flood" in text else None

    requests = [Request(name, None, [{"role": "user", "content": [{"type": "text", "text": f"please {name}"}]}])
                for name in ("answer", "stall", "flood")]
    with OpenAIServer(faults=faults) as server:
        backend = OpenAIBackend(name="gpt", model="fake", base_url=server.url, api_key_env="SILKIE_TEST_KEY",
                                timeout=1.0, max_retries=0)
        answer, stalled, flooded = guarded(lambda: backend.generate(requests, GenerationParams(max_new_tokens=32)))
        assert wait_for(lambda: server.abandoned["trickle"] == 1 and server.abandoned["huge"] == 1), server.abandoned
    assert answer.text == "echo: please answer" and answer.error is None
    assert stalled.text is None and stalled.error.startswith("APITimeoutError")
    assert flooded.text is None and flooded.error.startswith("ReplyTooLarge: the reply passed ")
    assert len(server.requests) == 3  # max_retries 0: one attempt each


def test_batch_lines_past_their_bounds_are_charged_the_worst_case_and_not_cached(tmp_path):
    root = make_run(tmp_path, 4)
    with OpenAIServer(responder=TruthJudge(), usage=negative_usage) as server:
        summary = run(root, config_file(root, server, batch=True, budget_usd=1.0))
        sent = [json.loads(line) for line in server.files["file-0"].splitlines()]  # the batch's input file
    assert len(sent) == 4 and chat_requests(server) == []
    assert summary.counts["batch_out_of_bounds"] == summary.counts["batch_failed"] == 4
    # Deferred, so no record: a rerun batches them again.
    assert summary.counts["deferred_batch"] == 4 and not (root / "annotations.jsonl").read_text()
    # Each line is charged its worst case at the batch price: the prompt bound its custom_id carries.
    worst = sum(int(line["custom_id"].rpartition(":")[2]) * PRICE["input"] + MAX_TOKENS * PRICE["output"]
                for line in sent) / 2e6
    assert summary.spend_usd == pytest.approx(worst)
    with sqlite3.connect(root / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 0
