"""OpenAIBackend throughput against the local test server, which answers after a fixed latency.

With C requests in flight and latency L, no client can beat C / L items per second; the goal is
at least 0.9 of that. The sequential baseline (concurrency 1) is measured in the same run. Each
request carries a photo of its own, stored as a COCO-sized JPEG and read the way `silkie generate`
reads a run's images, so reading, encoding and upload are part of the cost. The server runs
in a process of its own, as a real one is remote: its work neither holds this process's GIL nor
counts in the client's CPU figure (the two still share the machine's cores). Prints one JSON line.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.openai_server

from silkie.io import load_image  # noqa: E402
from silkie.pool.base import GenerationParams, Request  # noqa: E402
from silkie.pool.openai_backend import OpenAIBackend  # noqa: E402
from silkie.schema import user_turn  # noqa: E402
from tests.openai_server import OpenAIServer  # noqa: E402

LATENCY = 0.2
ITEMS, CONCURRENCY = 400, 32
SEQUENTIAL_ITEMS = 20


def photo(seed: int) -> Image.Image:
    """640x480 with smooth colour changes and many colours: sent as JPEG, like a real photo."""
    coarse = Image.frombytes("RGB", (40, 30), random.Random(seed).randbytes(40 * 30 * 3))
    return coarse.resize((640, 480), Image.Resampling.BICUBIC)


class RemoteServer:
    """OpenAIServer in a child process; `max_in_flight()` reads and resets its peak concurrency."""

    def __init__(self, latency: float):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, latency), daemon=True)

    def __enter__(self) -> RemoteServer:
        self._process.start()
        self.url = self._conn.recv()
        return self

    def __exit__(self, *exc) -> None:
        self._conn.send("stop")
        self._process.join(10)

    def max_in_flight(self) -> int:
        self._conn.send("max_in_flight")
        return self._conn.recv()


def _serve(conn, latency: float) -> None:
    with OpenAIServer(latency=latency) as server:
        conn.send(server.url)
        while conn.recv() != "stop":
            conn.send(server.max_in_flight)
            server.max_in_flight = 0


def measure(server: RemoteServer, folder: Path, items: int, concurrency: int) -> tuple[float, float]:
    """(items per second, client CPU milliseconds per item) for one generate call."""
    requests = []
    for i in range(items):
        file = folder / f"{i}.jpg"
        if not file.exists():
            photo(i).save(file, quality=90)
        requests.append(Request(str(i), load_image(file), user_turn(f"question {i}"), file))
    backend = OpenAIBackend(name="bench", model="fake", base_url=server.url, api_key_env=None,
                            concurrency=concurrency)
    wall, cpu = time.perf_counter(), time.process_time()
    results = backend.generate(requests, GenerationParams())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    errors = [r.error for r in results if r.error]
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return items / wall, 1000 * cpu / items


def main() -> None:
    with RemoteServer(LATENCY) as server, tempfile.TemporaryDirectory() as folder:
        measure(server, Path(folder), CONCURRENCY, CONCURRENCY)  # warm-up: the SDK imports its resources on first use
        server.max_in_flight()
        concurrent, cpu_ms = measure(server, Path(folder), ITEMS, CONCURRENCY)
        in_flight = server.max_in_flight()
        sequential, _ = measure(server, Path(folder), SEQUENTIAL_ITEMS, 1)
    bound = CONCURRENCY / LATENCY
    print(json.dumps({
        "benchmark": "openai_backend",
        "latency_s": LATENCY,
        "items": ITEMS,
        "concurrency": CONCURRENCY,
        "server_max_in_flight": in_flight,
        "items_per_s": round(concurrent, 1),
        "bound_items_per_s": round(bound, 1),
        "fraction_of_bound": round(concurrent / bound, 3),
        # ITEMS / C rounds, the last one partly filled, take at least ceil(ITEMS / C) latencies.
        "fraction_possible": round(ITEMS / (math.ceil(ITEMS / CONCURRENCY) * LATENCY) / bound, 3),
        "client_cpu_ms_per_item": round(cpu_ms, 2),
        "sequential_items": SEQUENTIAL_ITEMS,
        "sequential_items_per_s": round(sequential, 2),
        "speedup_over_sequential": round(concurrent / sequential, 1),
    }))


if __name__ == "__main__":
    main()
