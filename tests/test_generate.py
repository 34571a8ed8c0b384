"""`silkie generate` on the shipped mini pool: valid records, K distinct models, resumable after a
kill, shards that merge, a cache that never recomputes, and bad images recorded per item."""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from silkie.cli import main
from silkie.io import read_checked, read_stage
from silkie.pool.config import load_pool

N = 20


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    run = tmp_path_factory.mktemp("gen-world")
    assert main(["world", "make", "--n", str(N), "--seed", "11", "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """One uninterrupted run: the records every other way of running must reproduce."""
    out = tmp_path_factory.mktemp("gen-ref") / "completions.jsonl"
    assert main(["generate", "--instructions", str(world / "instructions.jsonl"), "--out", str(out)]) == 0
    return out


def pairs(path):
    records = [r for _, r in read_stage(path)]
    if records and not isinstance(records[-1], dict) and "last line cut short" in str(records[-1]):
        records.pop()  # a SIGKILL inside a write: the next writer cuts it off; a reader reports it
    assert all(isinstance(r, dict) for r in records)
    keys = [(r["id"], r["model"]) for r in records]
    assert len(keys) == len(set(keys)), "a (id, model) pair was written twice"
    return {(r["id"], r["model"]): r["response"] for r in records}


def test_every_instruction_gets_four_distinct_valid_completions(reference):
    records = [r for _, r in read_checked(reference, "completion")]
    assert len(records) == 4 * N and all(isinstance(r, dict) for r in records), records[:3]
    by_id = collections.defaultdict(set)
    for r in records:
        by_id[r["id"]].add(r["model"])
        assert r["error"] is None and r["response"].strip()
        assert r["generation"]["max_new_tokens"] == 96 and r["generation"]["temperature"] == 0.0
    assert len(by_id) == N and all(len(models) == 4 for models in by_id.values())
    assert {m for models in by_id.values() for m in models} <= {m.name for m in load_pool("mini").models}


def test_rerun_adds_nothing_and_loads_no_model(reference, world, capsys):
    before = reference.read_bytes()
    assert main(["generate", "--instructions", str(world / "instructions.jsonl"), "--out", str(reference)]) == 0
    assert reference.read_bytes() == before
    assert " 0 " in capsys.readouterr().out  # the summary shows no new items


def test_cache_answers_a_rerun_after_the_output_is_lost(reference, world, tmp_path, capsys):
    out = tmp_path / "completions.jsonl"
    (tmp_path / "cache.sqlite").write_bytes((reference.parent / "cache.sqlite").read_bytes())
    assert main(["generate", "--instructions", str(world / "instructions.jsonl"), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert pairs(out) == pairs(reference)
    for line in table.splitlines()[1:6]:  # model, assigned, new, cached, ...
        _, assigned, new, cached, *_ = line.split()
        assert new == "0" and cached == assigned


def test_killed_run_resumes_to_the_same_pairs(reference, world, tmp_path):
    out = tmp_path / "completions.jsonl"
    cmd = [sys.executable, "-m", "silkie.cli", "generate", "--instructions", str(world / "instructions.jsonl"),
           "--out", str(out)]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and (not out.exists() or out.stat().st_size == 0):
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial = pairs(out) if out.exists() else {}
    assert len(partial) < 4 * N, "the child finished before it could be killed"
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert pairs(out) == pairs(reference)


def test_shards_merge_into_the_unsharded_result(reference, world, tmp_path):
    out = tmp_path / "completions.jsonl"
    for shard in ("0/2", "1/2"):
        assert main(["generate", "--instructions", str(world / "instructions.jsonl"), "--out", str(out),
                     "--shard", shard]) == 0
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.glob("completions.shard-*")) == [
        "completions.shard-0-of-2.jsonl", "completions.shard-1-of-2.jsonl"]
    assert pairs(out) == pairs(reference)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("completions*")}
    assert main(["generate", "--instructions", str(world / "instructions.jsonl"), "--out", str(out)]) == 0
    assert pairs(out) == pairs(reference)  # the unsharded rerun counts the shards as done
    assert {p.name: p.read_bytes() for p in tmp_path.glob("completions.shard*")} == \
        {k: v for k, v in before.items() if "shard" in k}


def test_bad_image_is_recorded_per_item(world, tmp_path):
    run = tmp_path / "run"
    (run / "images").mkdir(parents=True)
    lines = (world / "instructions.jsonl").read_text().splitlines()[:3]
    records = [json.loads(line) for line in lines]
    for r in records:
        source = world / r["image"]
        (run / r["image"]).write_bytes(source.read_bytes())
    records[1]["image"] = "images/broken.png"
    (run / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (run / "instructions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["generate", "--instructions", str(run / "instructions.jsonl"), "--out",
                 str(run / "completions.jsonl"), "--per-instruction", "2"]) == 0
    got = [r for _, r in read_checked(run / "completions.jsonl", "completion")]
    assert len(got) == 6 and all(isinstance(r, dict) for r in got)
    broken = [r for r in got if r["id"] == records[1]["id"]]
    assert all("not an image" in r["error"] or "corrupt" in r["error"] for r in broken)
    assert all(r["error"] is None for r in got if r["id"] != records[1]["id"])


def test_shard_flag_is_checked(world, tmp_path):
    result = subprocess.run([sys.executable, "-m", "silkie.cli", "generate", "--instructions",
                             str(world / "instructions.jsonl"), "--out", str(tmp_path / "c.jsonl"), "--shard", "2/2"],
                            capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 2 and "need 0 <= I < N" in result.stderr
