"""A deflate bomb in the release's zip (issue 19) against the same build without it.

A 3-row release whose zip holds two photo-like JPEGs and one entry of a valid JPEG followed by 1.6 GB of
zeros (~1.6 MB deflated, written in 1 MiB pieces so making it is cheap), and the same release with a
plain JPEG in its place. Each is built by `python vlfeedback_dataset.py build --from-release` in a fresh
process, killed past `--limit` seconds: seconds and peak RSS of that process (RSS at the kill if
killed). Prints one JSON line. Goal: the bomb costs what the clean build costs (ratios ~1).

    python benchmarks/hostile_zip.py [--limit 120] [--gb 1.6] [--root OTHER_CHECKOUT]
"""

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
ROOT = Path(__file__).resolve().parent.parent


def jpeg(seed: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((336, 336), 40 + seed).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def write_release(folder: Path, bomb_bytes: int) -> tuple[Path, Path]:
    """Rows r-0, r-1, r-2; r-1's image is the bomb when bomb_bytes > 0."""
    jsonl, archive = folder / "vlfeedback_80k.jsonl", folder / "merged_images.zip"
    with open(jsonl, "w") as out:
        for i in range(3):
            completions = [{"annotations": {a: {"Rating": str(1 + m), "Rationale": "why"} for a in ASPECTS},
                            "model": f"model-{m}", "response": f"Answer {m}."} for m in range(4)]
            out.write(json.dumps({"id": f"r-{i}", "prompt": "Describe the image.", "completions": completions}) + "\n")
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(3):
            info = zipfile.ZipInfo(f"merged_images/r-{i}.jpg")
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                f.write(jpeg(i))
                if i == 1 and bomb_bytes:
                    zeros, left = bytes(1 << 20), bomb_bytes
                    while left > 0:
                        f.write(zeros[:left])
                        left -= len(zeros)
    return jsonl, archive


def measure(jsonl: Path, archive: Path, limit: float, root: Path) -> dict:
    """One build in a fresh process: wall seconds and its peak RSS (os.wait4's, so known after a kill).
    The code built with is `root`'s (another checkout, e.g. the code before a change)."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vlfeedback_dataset", "build", "--from-release", str(jsonl),
                   "--images", str(archive), "--out", f"{out}/built"]
        env = {**os.environ, "PYTHONPATH": str(root)}
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=root, env=env)
        killed = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > limit:
                os.kill(child.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(child.pid, 0)
                killed = True
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        stderr = child.stderr.read().decode(errors="replace")
        child.stderr.close()
        report = Path(out, "built", "build_report.json")
        flagged = json.loads(report.read_text())["flagged"] if report.exists() else None
        return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024), "killed": killed,
                "exit": child.returncode, "flagged": flagged, "stderr_tail": stderr.strip().splitlines()[-1:]}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=120.0, help="kill a build past this many seconds")
    parser.add_argument("--gb", type=float, default=1.6, help="the bomb's expanded size in GB")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose code builds")
    args = parser.parse_args()
    figures = {"benchmark": "hostile_zip", "bomb_gb": args.gb, "root": str(args.root)}
    with tempfile.TemporaryDirectory() as folder:
        for kind, size in (("clean", 0), ("bomb", int(args.gb * 1e9))):
            start = time.perf_counter()
            jsonl, archive = write_release(Path(folder), size)
            figures[f"{kind}_zip_mb"] = round(archive.stat().st_size / 1e6, 2)
            figures[f"{kind}_make_s"] = round(time.perf_counter() - start, 2)
            figures[kind] = measure(jsonl, archive, args.limit, args.root)
    figures["bomb_vs_clean_seconds"] = round(figures["bomb"]["seconds"] / figures["clean"]["seconds"], 2)
    figures["bomb_vs_clean_rss"] = round(figures["bomb"]["peak_rss_mib"] / figures["clean"]["peak_rss_mib"], 2)
    return figures


if __name__ == "__main__":
    print(json.dumps(main()))
