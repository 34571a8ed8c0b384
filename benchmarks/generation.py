"""Batched transformers generation vs a one-at-a-time loop on shipped mini-pool models: the base
(tiny Qwen2-VL) and the hallucinator (tiny LLaVA), or the models named on the command line.

Prints one JSON line per model: items/s at batch 1 and batch 16 (greedy, same items, same process), their
ratio (goal >= 4x on 2 CPU cores), and whether the outputs are identical. Both sizes are warmed up
and then timed in alternation, ROUNDS times each; the figures are the medians, and the ratio of
each round is listed so the spread shows (the machine may be shared).
"""

import json
import statistics
import sys
import time

from silkie.pool.base import GenerationParams, Request
from silkie.pool.transformers_backend import TransformersBackend
from silkie.schema import user_turn
from silkie.world.make import generate
from silkie.world.scenes import render

ROUNDS = 3


def main(model: str = "world:mini-base", n: int = 96, batch: int = 16) -> dict:
    backend = TransformersBackend(model, model, batch_size=batch, dtype="float32")
    requests = [Request(r["id"], render(scene), user_turn(r["prompt"])) for r, scene in generate(n, seed=4242)]
    params = GenerationParams(max_new_tokens=96)  # as configs/pool/mini.yaml
    for size in (1, batch):  # warm-up
        backend.batch_size = size
        backend.generate(requests[:batch], params)
    rates, outputs = {1: [], batch: []}, {}
    for _ in range(ROUNDS):
        for size in (1, batch):
            backend.batch_size = size
            start = time.perf_counter()
            outputs[size] = [r.text for r in backend.generate(requests, params)]
            rates[size].append(n / (time.perf_counter() - start))
    one, many = statistics.median(rates[1]), statistics.median(rates[batch])
    return {"benchmark": "batched_generation", "model": model, "items": n, "rounds": ROUNDS,
            "items_per_s_batch_1": round(one, 2), f"items_per_s_batch_{batch}": round(many, 2),
            "speedup": round(many / one, 2),
            "speedup_per_round": [round(b / a, 2) for a, b in zip(rates[1], rates[batch])],
            "goal": 4.0, "identical_outputs": sum(a == b for a, b in zip(outputs[1], outputs[batch])), "of": n}


if __name__ == "__main__":
    for name in sys.argv[1:] or ["world:mini-base", "world:mini-hallucinator"]:
        print(json.dumps(main(name)), flush=True)
