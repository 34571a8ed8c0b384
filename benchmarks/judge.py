"""`annotate` with the OpenAI judge against the local test server: throughput under a rate limit
with injected faults, a plain sequential loop as the baseline, and memory over 10K items.

Throughput: the server answers after LATENCY, allows LIMIT requests a minute, and answers 10% of
requests with 429 (Retry-After) and 5% with 500. Faulted requests count against the client's own
limit (retries are paced like first tries), so no client can judge more than (1 - 0.15) * LIMIT
items a minute; the goal is 0.9 of that. `--scale S` divides every time by S (S * LIMIT a minute,
LATENCY / S, Retry-After / S), so the default S=10 runs in a tenth of the time; the SDK's own
backoff after a 500 (0.5 s and up) is not scaled, which only makes the scaled run harder.
`--scale 1` is the real configuration (600 a minute, 200 ms: about four minutes for 2K items).

Memory: 10K items with no latency, no limit and no faults, the server in a child process so that
only the client is measured; RSS is sampled while the run goes. Prints one JSON line.
"""

import argparse
import json
import multiprocessing
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.openai_server

from silkie.feedback.annotate import annotate  # noqa: E402
from silkie.schema import ASPECTS  # noqa: E402
from tests.openai_server import OpenAIServer, prompt_text, rate_limited, server_error  # noqa: E402

LIMIT, LATENCY, RETRY_AFTER = 600, 0.2, 1.0
SHARE_429, SHARE_500 = 0.10, 0.05
ANSWER = re.compile(r"Answer of (m\d) to (\S+?)\.")


def make_run(root: Path, n: int) -> Path:
    """n instructions over 20 world images, each answered by four models."""
    from silkie.world.make import write

    write(root, 20, seed=3)
    scenes = [json.loads(line) for line in (root / "instructions.jsonl").read_text().splitlines()]
    with open(root / "instructions.jsonl", "w") as instructions, open(root / "completions.jsonl", "w") as completions:
        for k in range(n):
            record = {**scenes[k % 20], "id": f"bench-{k:06d}"}
            instructions.write(json.dumps(record) + "\n")
            for model in ("m0", "m1", "m2", "m3"):
                completions.write(json.dumps({"id": record["id"], "model": model, "generation": {}, "error": None,
                                              "response": f"Answer of {model} to {record['id']}."}) + "\n")
    return root


def responder(body: dict) -> str:
    shown = ANSWER.findall(prompt_text(body))
    lines = []
    for aspect in ASPECTS:
        lines.append(f"#### {aspect} Assessment")
        for j, (model, _) in enumerate(shown, start=1):
            lines += [f"##### Output for Text {j}", f"Rating: {int(model[1]) + 2}", "Rationale: Matches the image."]
    return "\n".join(lines)


def faulty(scale: float):
    rng = random.Random(0)

    def faults(number, body):
        draw = rng.random()
        if draw < SHARE_429:
            return rate_limited(RETRY_AFTER / scale)
        return server_error() if draw < SHARE_429 + SHARE_500 else None
    return faults


def config(root: Path, url: str, **settings) -> str:
    path = root / "judge.yaml"
    path.write_text(json.dumps({"model": "bench", "base_url": url, "api_key_env": None, "max_retries": 10,
                                "generation": {"max_new_tokens": 300}, **settings}))
    return str(path)


def throughput(root: Path, items: int, scale: float) -> dict:
    make_run(root, items)
    with OpenAIServer(responder=responder, latency=LATENCY / scale, faults=faulty(scale),
                      rate_limit=(LIMIT, 60 / scale)) as server:
        start = time.perf_counter()
        summary = annotate(root / "instructions.jsonl", root / "completions.jsonl", root / "annotations.jsonl",
                           config=config(root, server.url, rpm=round(LIMIT * scale), concurrency=32), progress=False)
        wall = time.perf_counter() - start
    judged = summary.counts["judged"]
    assert judged == items, summary.table()
    per_minute = judged / wall * 60
    bound = (1 - SHARE_429 - SHARE_500) * LIMIT * scale
    return {"items": items, "wall_s": round(wall, 1), "items_per_min": round(per_minute, 1),
            "bound_items_per_min": round(bound, 1), "fraction_of_bound": round(per_minute / bound, 3),
            "requests": len(server.requests), "server_429_injected": server.counts["429"],
            "server_500": server.counts["500"], "server_rate_limited": server.counts["rate_limited"],
            "client_retries": summary.counts["retries"]}


def sequential(root: Path, items: int, scale: float) -> float:
    """Items a minute for the obvious loop: one request at a time, the SDK's retries, parse, next."""
    import openai

    from silkie.feedback.parse import parse_reply
    from silkie.feedback.prompts import Prompt
    from silkie.io import load_image
    from silkie.pool.openai_backend import data_url, openai_messages

    make_run(root, items)
    records = [json.loads(line) for line in (root / "instructions.jsonl").read_text().splitlines()]
    prompt = Prompt()
    with OpenAIServer(responder=responder, latency=LATENCY / scale, faults=faulty(scale),
                      rate_limit=(LIMIT, 60 / scale)) as server:
        client = openai.OpenAI(base_url=server.url, api_key="EMPTY", max_retries=10)
        start = time.perf_counter()
        for record in records:
            responses = [f"Answer of m{k} to {record['id']}." for k in range(4)]
            [request] = prompt.requests(record["prompt"], responses)
            url = data_url(load_image(root / record["image"]), 768)
            messages = openai_messages([{"role": "user", "content": [{"type": "image"},
                                                                      {"type": "text", "text": request.text}]}], url)
            reply = client.chat.completions.create(model="bench", messages=messages, max_tokens=300, temperature=0)
            assert not parse_reply(reply.choices[0].message.content, 4).missing
        wall = time.perf_counter() - start
    return items / wall * 60


def _serve(port: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    with OpenAIServer(responder=responder) as server:
        port.put(server.url)
        stop.wait()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def memory(root: Path, items: int) -> dict:
    make_run(root, items)
    out = root / "annotations.jsonl"
    urls, stop = multiprocessing.Queue(), multiprocessing.Event()
    child = multiprocessing.Process(target=_serve, args=(urls, stop), daemon=True)
    child.start()
    samples, running = [], True

    def sample():
        while running:
            size = out.stat().st_size if out.exists() else 0
            samples.append((size, _rss_mb()))
            time.sleep(0.05)

    try:
        path = config(root, urls.get(timeout=30), concurrency=32)
        before = _rss_mb()
        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        summary = annotate(root / "instructions.jsonl", root / "completions.jsonl", out, config=path, progress=False)
        wall = time.perf_counter() - start
        running = False
        sampler.join()
    finally:
        stop.set()
        child.join()
    assert summary.counts["judged"] == items, summary.table()
    final = out.stat().st_size

    def rss_at(share):  # RSS when about `share` of the records had been written
        return round(next(rss for size, rss in samples if size >= share * final), 1)

    return {"items": items, "wall_s": round(wall, 1), "rss_mb_before": round(before, 1),
            "rss_mb_at_10pct": rss_at(0.1), "rss_mb_at_50pct": rss_at(0.5), "rss_mb_at_100pct": rss_at(1.0),
            "peak_rss_growth_mb": round(max(rss for _, rss in samples) - before, 1),
            "growth_mb_10pct_to_end": round(rss_at(1.0) - rss_at(0.1), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0, help="divide all times by this (1: the real config)")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--sequential-items", type=int, default=300)
    parser.add_argument("--memory-items", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        limited = throughput(scratch / "limited", args.items, args.scale)
        baseline = sequential(scratch / "sequential", args.sequential_items, args.scale)
        flat = memory(scratch / "memory", args.memory_items) if args.memory_items else None
    print(json.dumps({
        "benchmark": "judge", "scale": args.scale, "limit_per_min": LIMIT * args.scale,
        "latency_s": LATENCY / args.scale, "fault_share": SHARE_429 + SHARE_500, **limited,
        "target_fraction": 0.9, "sequential_items": args.sequential_items,
        "sequential_items_per_min": round(baseline, 1),
        "speedup_over_sequential": round(limited["items_per_min"] / baseline, 2), "memory": flat,
    }))


if __name__ == "__main__":
    main()
