"""The dataset builder on synthetic VLFeedback-shaped release files, against the obvious baseline.

For 5K and 20K rows (4 responses of ~150 words, 336-px JPEGs in a zip), each job in a fresh process:
- `build`: the whole `silkie.build.build` (default + pairs + ratings + card): rows/s, peak RSS, and how
  many times each image was read from the zip (1: the source is read once);
- `builder`: `vlfeedback_dataset.VLFeedback`'s `default` config alone, against
- `baseline`: `Dataset.from_list(rows).to_parquet` on the same rows.
Then the time to plan `silkie` pairs for 80K rows. Prints one JSON line.
Goal: RSS flat in the row count (< 1 GiB at 20K), builder throughput >= baseline.
"""

import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
WORDS = "the a red blue circle square image shows there is near left right top bottom with of and".split()


def write_release(folder: Path, n: int) -> tuple[Path, Path]:
    from PIL import Image

    rng = random.Random(0)
    images = []
    for k in range(32):  # a few distinct photos-like JPEGs, reused: the bytes per row are what matter
        image = Image.effect_noise((336, 336), 40 + k).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        images.append(buffer.getvalue())
    jsonl, archive = folder / "vlfeedback_80k.jsonl", folder / "merged_images.zip"
    with open(jsonl, "w") as out, zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for i in range(n):
            row_id = f"svit-conversation-{i}"
            completions = [{"annotations": {a: {"Rating": str(rng.randint(1, 5)), "Rationale": " ".join(
                rng.choices(WORDS, k=25))} for a in ASPECTS}, "model": f"model-{m}",
                "response": " ".join(rng.choices(WORDS, k=150))} for m in rng.sample(range(12), 4)]
            out.write(json.dumps({"id": row_id, "prompt": "Describe the image in detail.",
                                  "models": [c["model"] for c in completions], "completions": completions}) + "\n")
            z.writestr(f"merged_images/{row_id}.jpg", images[i % len(images)])
    return jsonl, archive


def run_build(jsonl: str, archive: str, out: str) -> dict:
    from silkie.build import build

    reads, open_ = [0], zipfile.ZipFile.open  # the build opens each entry as a stream (bounded reads)

    def counted(self, *args, **kwargs):
        reads[0] += 1
        return open_(self, *args, **kwargs)

    zipfile.ZipFile.open = counted
    _, report, _ = build(f"{out}/built", release=jsonl, images=archive)
    return {"image_reads_per_row": round(reads[0] / report.counts["rows"], 2)}


def run_builder(jsonl: str, archive: str, out: str) -> None:
    from silkie.dataset import BuildReport
    from vlfeedback_dataset import VLFeedback

    builder = VLFeedback(config_name="default", cache_dir=f"{out}/cache", hash="bench", release=jsonl,
                         images=archive, report=BuildReport())
    builder.download_and_prepare(output_dir=f"{out}/default", file_format="parquet")


def run_baseline(jsonl: str, archive: str, out: str) -> None:
    from datasets import Dataset

    from silkie.dataset import completions_list
    from silkie.schema import DEFAULT_FEATURES, completion_columns

    rows = []
    with zipfile.ZipFile(archive) as z:
        for line in open(jsonl):
            record = json.loads(line)
            rows.append({"id": record["id"], "prompt": record["prompt"], "models": record["models"],
                         "completions": completion_columns(completions_list(record["completions"])),
                         "image": {"bytes": z.read(f"merged_images/{record['id']}.jpg"), "path": None},
                         "source": "svit"})
    Dataset.from_list(rows, features=DEFAULT_FEATURES).to_parquet(f"{out}/baseline.parquet")


def measure(kind: str, jsonl: Path, archive: Path, n: int) -> dict:
    """Run one job in a fresh process: seconds and peak RSS of that process alone."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, kind, str(jsonl), str(archive), out],
                                capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
        measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {"rows_per_s": round(n / seconds, 1), **measured}


def main() -> dict:
    from silkie.pairs import plan_pairs, row_from_completions

    figures = {"benchmark": "build_dataset"}
    with tempfile.TemporaryDirectory() as folder:
        for n in (5000, 20000):
            jsonl, archive = write_release(Path(folder), n)
            figures[f"build_{n}"] = measure("build", jsonl, archive, n)
            figures[f"builder_{n}"] = measure("builder", jsonl, archive, n)
            figures[f"baseline_{n}"] = measure("baseline", jsonl, archive, n)
    rng = random.Random(1)
    rows = [row_from_completions(f"r{i}", [{"model": f"m{m}", "response": "w " * rng.randint(20, 200),
                                             "annotations": {a: {"Rating": str(rng.randint(1, 5))} for a in ASPECTS}}
                                            for m in range(4)]) for i in range(80000)]
    start = time.perf_counter()
    pairs, _ = plan_pairs(rows)
    figures["pairs_80k"] = {"seconds": round(time.perf_counter() - start, 2), "pairs": len(pairs)}
    figures["builder_vs_baseline_speed_20k"] = round(
        figures["builder_20000"]["rows_per_s"] / figures["baseline_20000"]["rows_per_s"], 2)
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 1:
        extra = {"build": run_build, "builder": run_builder, "baseline": run_baseline}[sys.argv[1]](*sys.argv[2:5])
        print(json.dumps({"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                          **(extra or {})}))
    else:
        print(json.dumps(main()))
