"""The OpenAI judge and `annotate` against a real chat-completions server on 127.0.0.1.

The server's responder is a judge that knows the truth: it finds the responses in the order it
was shown them and writes each one's true ratings in the requested layout. Recovering the truth
per model from the records proves the order was stored and mapped back correctly.
"""

import hashlib
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai_server import Fault, OpenAIServer, malformed, prompt_text, rate_limited, server_error, slow, word_usage

from silkie import InputError
from silkie.feedback.annotate import annotate
from silkie.feedback.batch import state_path
from silkie.schema import ASPECTS, check_annotation
from silkie.world.make import write

KEY = "sk-judge-test-5d1e8f2a9c"
MODELS = ("m0", "m1", "m2", "m3")
ANSWER = re.compile(r"Answer of (m\d) to (\S+?)\.")
PRICE = {"input": 2.0, "output": 10.0}  # USD per million tokens


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("SILKIE_JUDGE_KEY", KEY)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def truth(model, item_id, aspect):
    return 1 + int(hashlib.sha256(f"{model}/{item_id}/{aspect}".encode()).hexdigest(), 16) % 5


def make_run(root: Path, n: int, failed=()) -> Path:
    """n world instructions, each answered by four models; (id, model) pairs in `failed` errored."""
    write(root, n, seed=7)
    ids = [json.loads(line)["id"] for line in (root / "instructions.jsonl").read_text().splitlines()]
    with open(root / "completions.jsonl", "w") as f:
        for item_id in ids:
            for model in MODELS:
                bad = (item_id, model) in failed
                response = "" if bad else f"Answer of {model} to {item_id}."
                f.write(json.dumps({"id": item_id, "model": model, "response": response, "generation": {},
                                    "error": "out of memory" if bad else None}) + "\n")
    return root


def shown(body):
    """(model, id) of each response, in the order this request showed them."""
    first_turn = prompt_text({"messages": body["messages"][:1]})
    return ANSWER.findall(first_turn.split("## Reply")[0])


def layout(pairs, aspects, style):
    """A reply in the paper's layout, or one of the near misses judges write."""
    lines = ["Here is my assessment."] if style == 1 else []
    for aspect in aspects:
        lines.append(f"**{aspect} Assessment**" if style == 1 else f"#### {aspect} Assessment")
        for j, (model, item_id) in enumerate(pairs, start=1):
            rating = truth(model, item_id, aspect)
            if style == 2:
                lines += [f"Response {j}: Rating: {rating}/5", f"Rationale: Judged against the image ({model})."]
            else:
                lines += [f"##### Output for Text {j}", f"Rating: {rating}", "Rationale: Judged against the image."]
    return "\n".join(lines)


class TruthJudge:
    """The server's responder. `partial`: ids whose first reply stops after one aspect; `hopeless`:
    ids whose replies never parse."""

    def __init__(self, partial=(), hopeless=()):
        self.partial, self.hopeless = set(partial), set(hopeless)
        self.seen = []  # (id, [models in the order shown]) per request

    def __call__(self, body):
        pairs = shown(body)
        item_id = pairs[0][1]
        reask = len(body["messages"]) > 1
        self.seen.append((item_id, [m for m, _ in pairs], reask))
        if item_id in self.hopeless:
            return "I am unable to rate these texts."
        asked = re.search(r"Rate the (.+?) of each text", prompt_text(body))
        aspects = [asked.group(1)] if asked else list(ASPECTS)
        if body.get("response_format"):
            return json.dumps({a: [{"text": j, "rationale": "Judged.", "rating": truth(m, i, a)}
                                   for j, (m, i) in enumerate(pairs, start=1)] for a in aspects})
        if item_id in self.partial and not reask:
            aspects = aspects[:1]
        return layout(pairs, aspects, style=int(hashlib.md5(item_id.encode()).hexdigest(), 16) % 3)


def config_file(root: Path, server, **settings) -> Path:
    data = {"model": "judge-test", "base_url": server.url, "api_key_env": "SILKIE_JUDGE_KEY", "concurrency": 4,
            "timeout": 1.0, "max_retries": 4, "prices": {"judge-test": PRICE}, "batch_poll_s": 0.02,
            "generation": {"max_new_tokens": 200}, **settings}
    path = root / "judge.yaml"
    path.write_text(json.dumps(data))
    return path


def records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "annotations.jsonl").read_text().splitlines()]


def assert_truth(record):
    for model, cells in zip(record["models"], record["annotations"]):
        for aspect in ASPECTS:
            assert cells[aspect]["Rating"] == str(truth(model, record["id"], aspect)), (record["id"], model, aspect)


def run(root, config, **kwargs):
    return annotate(root / "instructions.jsonl", root / "completions.jsonl", root / "annotations.jsonl",
                    config=str(config), progress=False, **kwargs)


def chat_requests(server):
    return [r for r in server.requests if r.path.endswith("/chat/completions")]


def test_faults_retries_and_the_truth_per_model(tmp_path):
    root = make_run(tmp_path, 20, failed={("mini-7-000003-0", "m2")})
    ids = [json.loads(line)["id"] for line in (root / "instructions.jsonl").read_text().splitlines()]
    judge = TruthJudge(partial=ids[1:3], hopeless=ids[4:5])
    leaky = Fault("400", 400, json.dumps({"error": {"message": f"image refused for key {KEY}"}}).encode())
    injected, billed = Counter(), []

    def faults(number, body):
        item_id = shown(body)[0][1]
        if item_id == ids[6] and injected["429"] < 2:
            fault = rate_limited(0.3)
        elif item_id == ids[7] and injected["500"] < 2:
            fault = server_error()
        elif item_id == ids[8] and injected["slow"] < 1:
            fault = slow(1.5)  # past the 1 s timeout: the SDK gives up on it and retries
        else:
            return leaky if item_id == ids[9] else None
        injected[fault.name] += 1
        return fault

    def usage(body, text):
        billed.append((body, word_usage(body, text)))
        return billed[-1][1]

    with OpenAIServer(responder=judge, faults=faults, usage=usage) as server:
        summary = run(root, config_file(root, server, swap_check=0.3))
    got = records(root)
    assert sorted(r["id"] for r in got) == sorted(ids)  # every item exactly once
    by_id = {r["id"]: r for r in got}
    for record in got:
        check_annotation(record)
        assert record["judge"]["name"] == "judge-test" and record["judge"]["prompt_version"] == "all-in-one-v1"
    errors = {i: r["error"] for i, r in by_id.items() if r["error"]}
    assert set(errors) == {ids[4], ids[9]}
    assert errors[ids[4]].startswith("unreadable judge reply after one re-ask: no rating found for Text 1")
    assert errors[ids[9]].startswith("BadRequestError") and "<api key>" in errors[ids[9]]
    for item_id, record in by_id.items():
        if item_id not in errors:
            assert_truth(record)
            # The orders stored are the orders the server saw.
            seen = [models for i, models, reask in judge.seen if i == item_id and not reask]
            judged = record["judge"]
            orders = [judged["order"]] + ([judged["swap"]["order"]] if "swap" in judged else [])
            assert {tuple(record["models"][k] for k in order) for order in orders} == set(map(tuple, seen))
    assert len({tuple(r["judge"]["order"]) for r in got if len(r["models"]) == 4}) > 5  # a real shuffle
    failed = by_id["mini-7-000003-0"]
    assert failed["models"] == ["m0", "m1", "m3"] and failed["skipped"] == ["m2"]
    assert {len(models) for i, models, _ in judge.seen if i == "mini-7-000003-0"} == {3}
    # Partial replies were asked again once, in the same conversation, and then parsed fully.
    assert [by_id[i]["judge"]["reasks"] >= 1 for i in ids[1:3]] == [True, True]
    reasks = [r.json for r in chat_requests(server) if len(r.json["messages"]) == 3]
    assert reasks and all(b["messages"][1]["role"] == "assistant" for b in reasks)
    assert summary.counts["reasks"] == sum(r["judge"]["reasks"] for r in got) >= 3
    assert summary.counts["errors"] == 2 and summary.counts["judged"] == 18
    assert injected == {"429": 2, "500": 2, "slow": 1} and summary.counts["retries"] == 5
    # Swap-checked items were judged a second time in reverse order; the truthful judge agrees with itself.
    swapped = [r for r in got if "swap" in r["judge"]]
    assert swapped and all(r["judge"]["swap"]["order"] == r["judge"]["order"][::-1] for r in swapped)
    assert summary.counts["swap_agree"] == summary.counts["swap_cells"] > 0
    # The ledger is the usage the server reported, priced; the records split it by id.
    received = [u for body, u in billed if any(r.json is body and r.outcome == "ok" for r in server.requests)]
    assert len(received) == len(billed) - 1  # the reply that came too late was never seen, so never counted
    expected = sum(u["prompt_tokens"] * PRICE["input"] + u["completion_tokens"] * PRICE["output"]
                   for u in received) / 1e6
    assert summary.spend_usd == pytest.approx(expected)
    assert sum(r["judge"]["usage"].get("cost_usd", 0) for r in got) == pytest.approx(expected)
    report = (root / "judge_report.md").read_text()
    assert "## Position bias" in report and "| m0 |" in report and "unreadable judge reply" in report


def test_rerun_is_free_and_the_key_is_written_nowhere(tmp_path):
    root = make_run(tmp_path, 8)
    with OpenAIServer(responder=TruthJudge()) as server:
        config = config_file(root, server, swap_check=0.5)
        run(root, config)
        sent = len(server.requests)
        assert sent > 8
        (root / "annotations.jsonl").unlink()  # a second experiment over the same requests
        again = run(root, config)
        assert len(server.requests) == sent  # every answer came from the cache
        assert again.counts["judged"] == 8 and again.counts["cache_hits"] == sent
        assert all(r["judge"]["cached"] for r in records(root))
        third = run(root, config)  # nothing left to do
        assert third.counts["done"] == 8 and third.counts["judged"] == 0
    assert {r.headers["authorization"] for r in server.requests} == {f"Bearer {KEY}"}
    written = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in written) and any(p.name == "judge_config.yaml" for p in written)
    for path in written:
        assert KEY.encode() not in path.read_bytes(), path


def test_kill_and_restart_loses_and_repays_nothing(tmp_path):
    root = make_run(tmp_path, 40)
    script = ("import sys\nfrom silkie.feedback.annotate import annotate\n"
              "annotate(*sys.argv[1:4], config=sys.argv[4], progress=False)\n")
    with OpenAIServer(responder=TruthJudge(), latency=0.04) as server:
        config = config_file(root, server, concurrency=2)
        child = subprocess.Popen([sys.executable, "-c", script, str(root / "instructions.jsonl"),
                                  str(root / "completions.jsonl"), str(root / "annotations.jsonl"), str(config)])
        deadline = time.monotonic() + 60
        while server.counts["ok"] < 12 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL
        first = len(server.requests)  # requests that arrived before the kill
        assert 12 <= first < 40
        with sqlite3.connect(root / "cache.sqlite") as db:  # what the killed run had safely stored
            cached = db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        assert cached >= first - 2  # at most the requests in flight at the kill (concurrency 2) are lost
        summary = run(root, config)
        second = len(server.requests) - first
    got = records(root)
    assert sorted(r["id"] for r in got) == sorted({r["id"] for r in got}) and len(got) == 40
    for record in got:
        assert_truth(record)
    assert second == 40 - cached  # only what the cache lacked was paid for again
    assert summary.counts["cache_hits"] + summary.counts["requests"] == 40 - summary.counts["done"]


def test_budget_is_a_hard_cap_and_a_rerun_finishes(tmp_path):
    root = make_run(tmp_path, 12)

    def costly(body, text):
        # Bill near the worst case: every byte a token, and the whole max_tokens.
        return {"prompt_tokens": len(prompt_text(body).encode()), "completion_tokens": body["max_tokens"],
                "total_tokens": 0}

    with OpenAIServer(responder=TruthJudge(), usage=costly) as server:
        config = config_file(root, server, budget_usd=0.03)
        summary = run(root, config)
        billed = sum(costly(r.json, "")["prompt_tokens"] * PRICE["input"] + 200 * PRICE["output"]
                     for r in chat_requests(server)) / 1e6
        assert billed <= 0.03 and summary.spend_usd == pytest.approx(billed)
        assert 0 < summary.counts["judged"] < 12 and summary.counts["deferred_budget"] == 12 - summary.counts["judged"]
        assert "higher --budget-usd" in summary.table()
        first, done = len(server.requests), summary.counts["judged"]
        assert len(records(root)) == done  # a budget stop writes no record, so nothing blocks the retry

        finished = run(root, config_file(root, server, budget_usd=1.0))
        assert len(records(root)) == 12 and finished.counts["judged"] == 12 - done
        assert len(server.requests) - first == 12 - done  # nothing judged before was paid again


def test_prompt_variants_and_template(tmp_path):
    root = make_run(tmp_path, 4, failed={("mini-7-000000-0", "m3")})
    template = tmp_path / "authors.txt"
    # Shaped like the authors' published template: a layout example, then the placeholders.
    template.write_text("Judge these against the image. Input layout:\n- <text 1> [Text 1]\n- <text 4> [Text 4]\n"
                        "Instruction: [[instruction_placeholder]]\nTexts:\n- <text 1> [[text_1_placeholder]]\n"
                        "- <text 2> [[text_2_placeholder]]\n- <text 3> [[text_3_placeholder]]\n"
                        "- <text 4> [[text_4_placeholder]]\nAnswer as in the paper.\n")
    judge = TruthJudge()
    with OpenAIServer(responder=judge) as server:
        run(root, config_file(root, server, prompt="per-aspect"))
        per_aspect = records(root)
        assert len(chat_requests(server)) == 3 * 4
        (root / "annotations.jsonl").unlink()
        server.requests.clear()
        run(root, config_file(root, server, prompt="json"))
        as_json = records(root)
        response_format = chat_requests(server)[0].json["response_format"]
        assert response_format["type"] == "json_schema" and response_format["json_schema"]["strict"] is True
        (root / "annotations.jsonl").unlink()
        server.requests.clear()
        run(root, config_file(root, server, prompt_template=str(template)))
        templated = records(root)
        texts = [prompt_text(r.json) for r in chat_requests(server)]
    for got, version in ((per_aspect, "per-aspect-v1"), (as_json, "json-v1")):
        assert {r["judge"]["prompt_version"] for r in got} == {version}
        for record in got:
            assert record["error"] is None
            assert_truth(record)
    assert {r["judge"]["prompt_version"] for r in templated} == {
        "template-" + hashlib.sha256(template.read_bytes()).hexdigest()[:12]}
    three = next(t for t in texts if "mini-7-000000-0" in t)
    assert "- <text 3> Answer of" in three and "- <text 4> Answer of" not in three and "- <text 4> [Text 4]" in three
    assert "placeholder" not in three
    for record in templated:
        assert_truth(record)


def test_provider_failures_are_deferred_and_bad_images_are_errors(tmp_path):
    root = make_run(tmp_path, 6)
    lines = (root / "instructions.jsonl").read_text().splitlines()
    lost = {**json.loads(lines[2]), "image": "images/0000000000000000.png"}
    (root / "instructions.jsonl").write_text("\n".join(lines[:2] + [json.dumps(lost)] + lines[3:]) + "\n")
    garbled = lines[4].split('"id": "')[1].split('"')[0]

    def faults(number, body):
        return malformed() if garbled in json.dumps(body) else None

    with OpenAIServer(responder=TruthJudge(), faults=faults) as server:
        config = config_file(root, server, max_retries=1)
        first = run(root, config)
        assert first.counts["deferred_provider"] == 1 and first.counts["errors"] == 1
        assert "1 items not judged yet: the provider failed; rerun" in first.table()
        by_id = {r["id"]: r for r in records(root)}
        assert garbled not in by_id and by_id[lost["id"]]["error"].startswith("cannot read image")
        server.faults = None
        second = run(root, config)
    assert second.counts["judged"] == 1 and second.counts["done"] == 5
    assert_truth(next(r for r in records(root) if r["id"] == garbled))


def test_rate_limits_count_retries(tmp_path):
    root = make_run(tmp_path, 12)

    def faults(number, body):
        return rate_limited(0.01) if number % 4 == 1 else None

    with OpenAIServer(responder=TruthJudge(), faults=faults) as server:
        summary = run(root, config_file(root, server, rpm=1200, concurrency=3))
    arrivals = [r.time for r in chat_requests(server)]
    assert len(arrivals) == 12 + server.counts["429"] and server.counts["429"] >= 3
    assert summary.counts["retries"] == server.counts["429"]
    # 1200 per minute is one every 50 ms, retries included: no run of k requests comes faster than
    # that, give or take one timer's jitter (a slot sent late shortens only the gap after it).
    for k in range(1, len(arrivals)):
        assert min(b - a for a, b in zip(arrivals, arrivals[k:])) > k * 0.05 - 0.015, (k, arrivals)
    assert server.max_in_flight <= 3


def test_wrong_key_stops_the_run_without_leaking_it(tmp_path):
    root = make_run(tmp_path, 6)
    denied = Fault("401", 401, json.dumps({"error": {"message": f"Incorrect API key provided: {KEY}"}}).encode())
    with OpenAIServer(responder=TruthJudge(), faults=lambda n, b: denied) as server:
        with pytest.raises(InputError, match="refused the request") as caught:
            run(root, config_file(root, server))
    assert KEY not in str(caught.value) and "<api key>" in str(caught.value)
    assert records(root) == []


def test_dry_run_sends_and_writes_nothing(tmp_path, monkeypatch):
    root = make_run(tmp_path, 6)
    with OpenAIServer(responder=TruthJudge()) as server:
        config = config_file(root, server)
        monkeypatch.delenv("SILKIE_JUDGE_KEY")  # an estimate needs no key
        before = run(root, config, dry_run=True)
        assert server.requests == [] and not (root / "annotations.jsonl").exists()
        estimate = before.estimate
        assert estimate["items"] == 6 and estimate["requests"] == 6 and estimate["cached"] == 0
        assert 0 < estimate["cost_usd"] < estimate["worst_cost_usd"]
        assert "dry run, nothing sent" in before.table()
        monkeypatch.setenv("SILKIE_JUDGE_KEY", KEY)
        run(root, config)
        other = annotate(root / "instructions.jsonl", root / "completions.jsonl", root / "second.jsonl",
                         config=str(config), dry_run=True, progress=False)
        assert other.estimate["cached"] == 6 and other.estimate["requests"] == 0
        assert len(server.requests) == 6


def test_batch_mode(tmp_path, monkeypatch):
    import silkie.feedback.batch as batch

    monkeypatch.setattr(batch, "MAX_REQUESTS", 5)  # 12 items: three batch files
    root = make_run(tmp_path, 12)
    ids = [json.loads(line)["id"] for line in (root / "instructions.jsonl").read_text().splitlines()]
    with OpenAIServer(responder=TruthJudge(partial=ids[:1])) as server:
        server.batch_polls = 2
        server.batch_fails = lambda line: ids[5] in json.dumps(line)
        config = config_file(root, server, batch=True)
        summary = run(root, config)
        assert len(server.batches) == 3
        # Only the re-ask of the partial reply went online; the failed line is deferred, not sent online.
        assert [len(r.json["messages"]) for r in chat_requests(server)] == [3]
        assert summary.counts["deferred_batch"] == 1 and summary.counts["batch_failed"] == 1
        state = json.loads(state_path(root / "annotations.jsonl").read_text())
        assert [b["id"] for b in state["batches"]] == sorted(server.batches)
        assert all(b["collected"] for b in state["batches"])
        # Batch answers cost half: the cache holds each at the discounted price.
        first_usage = records(root)[1]["judge"]["usage"]
        assert first_usage["cost_usd"] == pytest.approx(
            (first_usage["prompt_tokens"] * PRICE["input"] + first_usage["completion_tokens"] * PRICE["output"]) / 2e6)

        server.batch_fails = lambda line: False
        again = run(root, config)
        assert len(server.batches) == 4 and again.counts["batched"] == 1
    got = records(root)
    assert sorted(r["id"] for r in got) == sorted(ids)
    for record in got:
        assert_truth(record)


def test_batch_resumes_by_its_stored_id_after_a_kill(tmp_path):
    root = make_run(tmp_path, 6)
    script = ("import sys\nfrom silkie.feedback.annotate import annotate\n"
              "annotate(*sys.argv[1:4], config=sys.argv[4], progress=False)\n")
    with OpenAIServer(responder=TruthJudge()) as server:
        server.batch_polls = 10**9  # the batch stays in progress until the test says otherwise
        config = config_file(root, server, batch=True)
        child = subprocess.Popen([sys.executable, "-c", script, str(root / "instructions.jsonl"),
                                  str(root / "completions.jsonl"), str(root / "annotations.jsonl"), str(config)])
        deadline = time.monotonic() + 60
        while not state_path(root / "annotations.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        state = json.loads(state_path(root / "annotations.jsonl").read_text())
        assert [b["id"] for b in state["batches"]] == ["batch-0"] and not state["batches"][0]["collected"]
        server.batch_polls = 1
        summary = run(root, config)
        assert list(server.batches) == ["batch-0"]  # collected, not submitted again
        assert summary.counts["batch_answers"] == 6 and chat_requests(server) == []
    assert len(records(root)) == 6
