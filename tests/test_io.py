import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from silkie.io import (
    ImageError,
    JsonlWriter,
    RecordError,
    load_image,
    read_jsonl,
    resolve_inside,
    store_image,
)

REPO = Path(__file__).resolve().parents[1]
N = 20_000

# Writes ids 0..n-1, skipping those already done, slowly enough that the parent kills it mid-run.
CHILD = r"""
import sys, time
from silkie.io import JsonlWriter
path, n = sys.argv[1], int(sys.argv[2])
with JsonlWriter(path, flush_every=8) as writer:
    for i in range(n):
        writer.write({"id": f"r{i}", "text": "é\u2028" * (i % 500)})
        if i % 20 == 0:
            time.sleep(0.001)
"""


def _record(i):
    return {"id": f"r{i}", "text": "é\u2028" * (i % 500)}


def _lines(path):
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]


def test_killed_writer_resumes_without_loss_or_duplicates(tmp_path):
    path = tmp_path / "out" / "completions.jsonl"
    for round_ in range(3):
        start = path.stat().st_size if path.exists() else 0
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(N)], cwd=REPO)
        while not path.exists() or path.stat().st_size < start + 20_000 * (round_ + 1):
            assert child.poll() is None, f"writer exited ({child.returncode}) before the kill"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
        results = list(read_jsonl(path))
        # A kill mid-write may leave one torn last line: readers name it, the next writer cuts it off.
        if results and isinstance(results[-1][1], RecordError):
            assert "last line cut short" in str(results.pop()[1])
        ids = [r["id"] for _, r in results]
        assert 0 < len(ids) < N and len(ids) == len(set(ids))

    with JsonlWriter(path) as writer:
        already = len(writer.done)
        written = sum(writer.write(_record(i)) for i in range(N))
    assert written == N - already
    records = _lines(path)
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(N))
    assert all(r == _record(int(r["id"][1:])) for r in records)


def test_torn_last_line_is_truncated_and_rewritten(tmp_path, capsys):
    path = tmp_path / "annotations.jsonl"
    with JsonlWriter(path) as writer:
        for i in range(3):
            writer.write(_record(i))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id": "r3", "te')

    *records, (_, torn) = read_jsonl(path)
    assert [r["id"] for _, r in records] == ["r0", "r1", "r2"]
    assert str(torn).startswith(f"{path}:4: last line cut short (no newline at the end of the file): invalid JSON")
    with JsonlWriter(path) as writer:
        assert "cut off an unfinished last line (16 bytes)" in capsys.readouterr().err
        assert path.read_bytes() == whole
        assert writer.done == {("r0",), ("r1",), ("r2",)}
        assert ("r3",) not in writer
        assert writer.write(_record(3))
    assert [r["id"] for r in _lines(path)] == ["r0", "r1", "r2", "r3"]


def test_writer_skips_done_keys_and_round_trips_unicode(tmp_path):
    path = tmp_path / "completions.jsonl"
    record = {"id": "a", "model": "m1", "response": "naïve\u2028line\nnext"}
    with JsonlWriter(path, key=("id", "model")) as writer:
        assert writer.write(record)
        assert not writer.write({**record, "response": "again"})
        assert writer.write({**record, "model": "m2"})
        assert ("a", "m1") in writer and ("a", "m3") not in writer
        with pytest.raises(RecordError, match="record 'a' has no 'model' field"):
            writer.write({"id": "a"})
    assert "naïve".encode() in path.read_bytes()  # stored as UTF-8, not \u escapes
    assert _lines(path) == [record, {**record, "model": "m2"}]
    with JsonlWriter(path, key=("id", "model")) as writer:
        assert writer.done == {("a", "m1"), ("a", "m2")}


def test_second_writer_on_the_same_file_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    with JsonlWriter(path), pytest.raises(RuntimeError, match="already being written"):
        JsonlWriter(path)


def test_read_jsonl_reports_bad_lines_and_carries_on(tmp_path):
    path = tmp_path / "instructions.jsonl"
    path.write_bytes(b'{"id": "a"}\n\n{"id": "\xff"}\n{"id": \n[1, 2]\n{"id": "b"}\n')
    results = list(read_jsonl(path))
    assert [n for n, _ in results] == [1, 3, 4, 5, 6]
    assert results[0][1] == {"id": "a"} and results[4][1] == {"id": "b"}
    errors = [str(r) for _, r in results if isinstance(r, RecordError)]
    assert errors[0].startswith(f"{path}:3: invalid UTF-8")
    assert errors[1].startswith(f"{path}:4: invalid JSON")
    assert errors[2] == f"{path}:5: expected a JSON object, got an array"
    # A writer opening a file with bad lines keeps them and counts only the good records.
    with JsonlWriter(path) as writer:
        assert writer.done == {("a",), ("b",)}


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _noise(size=(64, 48)):
    return Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))


def _png_header(width, height):
    """A PNG that claims a size but has no pixel data: decoding it could only fail."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_non_image_and_disallowed_format_are_refused(tmp_path):
    text = tmp_path / "photo.png"
    text.write_text("just some text\n")
    with pytest.raises(ImageError, match=r"not an image .*photo\.png"):
        load_image(text)
    tiff = tmp_path / "scan.png"  # Pillow reads TIFF, but it is not on the allowlist
    tiff.write_bytes(_encode(_noise(), "TIFF"))
    with pytest.raises(ImageError, match="not an image"):
        load_image(tiff)
    misnamed = tmp_path / "really_a_png.jpg"  # the content decides, not the name
    misnamed.write_bytes(_encode(_noise(), "PNG"))
    assert load_image(misnamed).tobytes() == _noise().tobytes()
    with pytest.raises(ImageError, match="cannot read image: .*missing.png"):
        load_image(tmp_path / "missing.png")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_refused(tmp_path, fmt):
    data = _encode(_noise(), fmt)
    path = tmp_path / "cut.img"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"^truncated or corrupt image: .*cut\.img") as error:
        load_image(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("side", [20_000, 10_000, 7_000])  # Pillow's error, Pillow's warning, ours
def test_oversized_image_is_refused_from_its_header(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(side, side))
    # "too large" rather than "truncated" shows it stopped before decoding the missing pixels.
    with pytest.raises(ImageError, match=r"^image too large: .*bomb\.png"):
        load_image(path)
    small = _encode(_noise(), "PNG")
    with pytest.raises(ImageError, match="64x48 pixels exceeds the limit of 1000"):
        load_image(small, max_pixels=1000)


def test_symlink_out_of_the_run_folder_is_refused(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "secret.png"
    (run / "images").mkdir(parents=True)
    outside.write_bytes(_encode(_noise(), "PNG"))
    (run / "images" / "link.png").symlink_to(outside)
    (run / "images" / "ok.png").write_bytes(outside.read_bytes())
    assert resolve_inside(run, "images/ok.png") == (run / "images" / "ok.png").resolve()
    for bad in ["images/link.png", "../secret.png", str(outside), "images/a\0.png"]:
        with pytest.raises(ImageError, match="run folder"):
            resolve_inside(run, bad)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    image.paste("blue", (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    upright = load_image(_encode(image, "JPEG", exif=exif))
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    rgb = load_image(_encode(image, "PNG"))
    assert rgb.mode == "RGB"
    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(255, 255, 255), (255, 0, 0), (127, 127, 127)]


def test_16_bit_grayscale_is_scaled_not_clipped():
    data = _encode(Image.new("I;16", (2, 2), 40000), "PNG")
    assert load_image(data).getpixel((0, 0)) == (156, 156, 156)  # 40000 / 256


def test_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), color) for color in ("red", "blue")]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data).getpixel((4, 4)) == (255, 0, 0)


def test_store_image_is_content_addressed(tmp_path):
    images = tmp_path / "run" / "images"
    png = _encode(_noise(), "PNG")
    name = store_image(png, images)
    assert name.startswith("images/") and name.endswith(".png")
    stored = images.parent / name
    assert stored.read_bytes() == png
    before = stored.stat()
    assert store_image(png, images) == name
    assert (stored.stat().st_ino, stored.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    jpg = store_image(_encode(_noise(), "JPEG"), images)
    assert jpg.endswith(".jpg")
    assert sorted(os.listdir(images)) == sorted([Path(name).name, Path(jpg).name])  # no temp files


def test_store_image_refuses_bad_bytes(tmp_path):
    images = tmp_path / "images"
    with pytest.raises(ImageError, match="truncated or corrupt"):
        store_image(_encode(_noise(), "PNG")[:300], images)
    with pytest.raises(ImageError, match="not an image"):
        store_image(b"<html>", images)
    assert not images.exists()
