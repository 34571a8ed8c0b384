"""Hostile and sloppy inputs (issue 19): nothing is lost silently, and one bad record is named with
its reason while the rest is read. Each crafted input is made here and kept small."""

import contextlib
import io
import json
import os
import random
import signal
import struct
import tracemalloc
import zlib

import pytest
from PIL import Image

from silkie import InputError
from silkie.cli import main
from silkie.dataset import BuildReport, SourceRow, checked_rows, release_rows
from silkie.io import (
    ImageError,
    JsonlWriter,
    RecordError,
    SpecialFileError,
    check_image,
    count_lines,
    load_image,
    read_jsonl,
    resolve_inside,
    store_image,
)
from silkie.schema import SchemaError, check_annotation, check_completion, check_instruction
from silkie.sources import collect
from silkie.sources.base import Problem, file_image


def png(size=(64, 48)) -> bytes:
    image = Image.frombytes("RGB", size, random.Random(0).randbytes(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def instruction(i, image="images/good.png", **extra) -> dict:
    return {"id": f"r{i}", "source": "test", "prompt": "Describe it.", "image": image, **extra}


def run_folder(tmp_path, lines: list[bytes]):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "good.png").write_bytes(png())
    path = tmp_path / "instructions.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def validate(path, capsys) -> tuple[int, str, list[str]]:
    """`silkie validate`: its exit status, its summary line and its error lines."""
    status = main(["validate", str(path)])
    out, err = capsys.readouterr()
    return status, out.strip(), err.strip().splitlines()


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: the alarm breaks a blocked open() of a FIFO, with pytest's own
    exception, which no `except OSError` on the way can turn into an ordinary image error."""
    def expire(*_):
        pytest.fail(f"still running after {seconds} s: something opened the FIFO")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---- 1. a last line without its newline ----------------------------------------------------------

def test_last_line_without_newline_is_a_record_and_a_cut_one_is_named(tmp_path, capsys):
    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    assert list(read_jsonl(whole)) == [(1, {"id": "a"}), (2, {"id": "b"})]
    cut, torn = tmp_path / "cut.jsonl", b'{"id": "b", "te'
    cut.write_bytes(b'{"id": "a"}\n' + torn)
    [(_, first), (number, error)] = read_jsonl(cut)
    assert first == {"id": "a"} and number == 2
    assert isinstance(error, RecordError) and str(error).startswith(f"{cut}:2: last line cut short")

    # A user's existing output file: its last record is kept and appending starts a new line.
    with JsonlWriter(whole) as writer:
        assert writer.done == {("a",), ("b",)}
        writer.write({"id": "c"})
    assert whole.read_bytes() == b'{"id": "a"}\n{"id": "b"}\n{"id": "c"}\n'
    assert capsys.readouterr().err == ""
    # The writer's own store with a torn write: cut off, and said so on stderr.
    with JsonlWriter(cut) as writer:
        assert writer.done == {("a",)}
    assert cut.read_bytes() == b'{"id": "a"}\n'
    assert f"{cut}: cut off an unfinished last line ({len(torn)} bytes)" in capsys.readouterr().err

    # The release's last row is built; a cut one is in the build report.
    release = tmp_path / "vlfeedback.jsonl"
    rows = [{"id": f"llava-{i}", "prompt": "p", "completions": []} for i in range(3)]
    release.write_bytes("\n".join(map(json.dumps, rows)).encode())
    report = BuildReport()
    assert [r.row["id"] for r in release_rows(release, None, report)] == ["llava-0", "llava-1", "llava-2"]
    assert not report.flagged
    release.write_bytes(release.read_bytes()[:-5])
    assert [r.row["id"] for r in release_rows(release, None, report)] == ["llava-0", "llava-1"]
    assert report.counts["invalid_json_lines"] == 1 and f"{release}:3: last line cut short" in \
        report.flagged[0]["reason"]

    # `silkie validate` counts the unterminated last record, and names a cut one.
    path = run_folder(tmp_path, [json.dumps(instruction(1)).encode() + b"\n", json.dumps(instruction(2)).encode()])
    assert validate(path, capsys) == (0, f"{path}: 2 valid instruction records, 0 with errors", [])
    path.write_bytes(path.read_bytes()[:-3])
    status, summary, errors = validate(path, capsys)
    assert (status, summary) == (2, f"{path}: 1 valid instruction records, 1 with errors")
    assert len(errors) == 1 and errors[0].startswith(f"error: {path}:2: last line cut short")


# ---- 2. a line nested ~10,000 levels deep --------------------------------------------------------

def test_deeply_nested_line_is_one_error_and_the_rest_is_read(tmp_path, capsys, monkeypatch):
    deep = b'{"id": "r2", "meta": ' + b"[" * 10_000 + b"]" * 10_000 + b"}\n"
    hundred = b'{"id": "r3", "meta": ' + b"[" * 100 + b"]" * 100 + b"}\n"  # parses, but past the bound
    brackets = json.dumps(instruction(4, prompt="[{" * 200)).encode() + b"\n"  # in a string: not nesting
    path = run_folder(tmp_path, [json.dumps(instruction(1)).encode() + b"\n", deep, hundred, brackets])
    results = list(read_jsonl(path))
    assert [n for n, _ in results] == [1, 2, 3, 4]
    assert results[0][1]["id"] == "r1" and results[3][1]["id"] == "r4"
    for number in (2, 3):
        assert str(results[number - 1][1]) == f"{path}:{number}: JSON nested more than 64 levels deep " \
                                              "(SILKIE_MAX_JSON_DEPTH)"
    with JsonlWriter(path) as writer:  # a writer opening the file counts the good records
        assert writer.done == {("r1",), ("r4",)}

    status, summary, errors = validate(path, capsys)
    assert (status, summary) == (2, f"{path}: 2 valid instruction records, 2 with errors")
    assert [e.split(": ")[1] for e in errors] == [f"{path}:2", f"{path}:3"]

    monkeypatch.setenv("SILKIE_MAX_JSON_DEPTH", "2")
    assert isinstance(dict(read_jsonl(path))[4], dict)  # an object holding strings: one deep
    path.write_bytes(b'{"meta": {"a": [1]}}\n')
    assert "nested more than 2 levels" in str(dict(read_jsonl(path))[1])


# ---- 3. sizes: a line, a text field --------------------------------------------------------------

def test_oversized_line_is_skipped_unread_and_the_rest_is_read(tmp_path, monkeypatch):
    path = tmp_path / "instructions.jsonl"
    huge = b'{"id": "big", "prompt": "' + b"x" * (8 << 20) + b'"}\n'
    path.write_bytes(b'{"id": "a"}\n' + huge + b'{"id": "b"}\n' + huge[:-1])
    monkeypatch.setenv("SILKIE_MAX_LINE_BYTES", str(1 << 16))
    tracemalloc.start()
    try:
        results = list(read_jsonl(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"held {peak:,} bytes for a 64 KiB line limit"  # an 8 MiB line is never held whole
    assert [n for n, _ in results] == [1, 2, 3, 4]
    assert results[0][1] == {"id": "a"} and results[2][1] == {"id": "b"}
    size = len(huge) - 1
    for number in (2, 4):
        assert str(results[number - 1][1]) == f"{path}:{number}: line of {size:,} bytes is over the limit of " \
                                              "65,536 (SILKIE_MAX_LINE_BYTES); skipped unread"
    assert count_lines(path) == 4
    assert [n for n, r in read_jsonl(path, max_line_bytes=len(huge)) if isinstance(r, dict)] == [1, 2, 3, 4]

    monkeypatch.setenv("SILKIE_MAX_LINE_BYTES", "16MB")
    with pytest.raises(InputError, match="SILKIE_MAX_LINE_BYTES='16MB': expected a positive whole number"):
        list(read_jsonl(path))


def test_oversized_text_fields_are_refused_with_their_limit(tmp_path, capsys, monkeypatch):
    # The default limit, through `silkie validate`: a 1.1M-character prompt is one error line.
    path = run_folder(tmp_path, [json.dumps(instruction(1, prompt="y" * 1_100_000)).encode() + b"\n",
                                 json.dumps(instruction(2)).encode() + b"\n"])
    status, summary, errors = validate(path, capsys)
    assert (status, summary) == (2, f"{path}: 1 valid instruction records, 1 with errors")
    assert errors == [f"error: {path}:1: instruction 'r1': field 'prompt' is 1,100,000 characters, over the "
                      "limit of 1,048,576 (SILKIE_MAX_TEXT_CHARS)"]

    monkeypatch.setenv("SILKIE_MAX_TEXT_CHARS", "100")
    check_instruction(instruction(1, prompt="y" * 100))
    with pytest.raises(SchemaError, match="instruction 'r1': field 'prompt' is 101 characters, over the limit of 100"):
        check_instruction(instruction(1, prompt="y" * 101))
    with pytest.raises(SchemaError, match="completion 'r1': field 'response' is 101 characters"):
        check_completion({"id": "r1", "model": "m", "response": "z" * 101})
    ratings = {aspect: {"Rating": "4", "Rationale": "ok"} for aspect in
               ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")}
    ratings["Helpfulness"]["Rationale"] = "w" * 101
    annotation = {"id": "r1", "models": ["m"], "annotations": [ratings], "judge": {"name": "j", "prompt_version": "1"}}
    with pytest.raises(SchemaError, match="response of 'm': Helpfulness Rationale is 101 characters"):
        check_annotation(annotation)


# ---- 4. a PNG whose pixel data is cut short ------------------------------------------------------

def png_cut_in_its_pixels() -> bytes:
    """A PNG whose compressed pixel stream stops halfway, yet every chunk is whole with its CRC right
    and IEND in place: verify(), which checks the chunks, passes it."""
    data, chunks, pos = png(), [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    pixels = b"".join(body for kind, body in chunks if kind == b"IDAT")
    kept = [(kind, body) for kind, body in chunks if kind not in (b"IDAT", b"IEND")]
    kept += [(b"IDAT", pixels[:len(pixels) // 2]), (b"IEND", b"")]
    return data[:8] + b"".join(struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
                               for kind, body in kept)


def test_png_cut_in_its_pixels_fails_the_image_check(tmp_path):
    data = png_cut_in_its_pixels()
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # the structural check alone lets it through
    with pytest.raises(ImageError, match="^truncated or corrupt image"):
        check_image(data)
    with pytest.raises(ImageError, match="^truncated or corrupt image"):
        store_image(data, tmp_path / "images")
    assert check_image(png()) == "png"
    # A JPEG whose scan data is garbage: verify() does not look, and its end marker is in place.
    jpeg = io.BytesIO()
    Image.frombytes("RGB", (320, 240), random.Random(0).randbytes(320 * 240 * 3)).save(jpeg, "JPEG")
    jpeg = jpeg.getvalue()
    with pytest.raises(ImageError, match="^truncated or corrupt image: .*broken data stream"):
        check_image(jpeg[:700] + random.Random(1).randbytes(len(jpeg) - 1400) + jpeg[-700:])
    assert check_image(jpeg) == "jpg"
    # In a build, the row stays, its image becomes null with the reason in the report.
    report = BuildReport()
    rows = [SourceRow({"id": f"r{i}", "prompt": "p", "models": [], "completions": [], "source": "t"},
                      lambda d=d: d) for i, d in enumerate([data, png()])]
    built = list(checked_rows(iter(rows), report))
    assert [r["image"] is None for r in built] == [True, False]
    [bad] = [f for f in report.flagged if f["reason"].startswith("image unusable")]
    assert report.counts["bad_images"] == 1 and bad["id"] == "r0" and "truncated or corrupt image" in bad["reason"]


# ---- 5. a FIFO where an image should be ----------------------------------------------------------

def test_fifo_in_an_images_root_is_refused_unopened(tmp_path, capsys):
    path = run_folder(tmp_path, [json.dumps(instruction(1, "images/pipe.png")).encode() + b"\n",
                                 json.dumps(instruction(2)).encode() + b"\n"])
    fifo = tmp_path / "images" / "pipe.png"
    os.mkfifo(fifo)
    with deadline(10):
        with pytest.raises(SpecialFileError, match=r"not a regular file \(a FIFO\): images/pipe.png"):
            resolve_inside(tmp_path, "images/pipe.png")
        with pytest.raises(ImageError, match=r"not a regular file \(a FIFO\)"):
            load_image(fifo)
        status, summary, errors = validate(path, capsys)
        with pytest.raises(Problem, match="FIFO") as problem:
            file_image(tmp_path / "images", "pipe.png", "x-1")()
        assert problem.value.reason == "unreadable image"

        # collect: the record is skipped with its reason, the good one is kept.
        llava = tmp_path / "llava.json"
        llava.write_text(json.dumps([{"id": name, "image": f"{name}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A thing."}]}
            for name in ("pipe", "good")]))
        summary_ = collect([f"llava={llava}"], tmp_path / "run" / "instructions.jsonl", n=10,
                           images_root=tmp_path / "images")
    assert (status, summary) == (2, f"{path}: 1 valid instruction records, 1 with errors")
    assert errors == [f"error: {path}:1: not a regular file (a FIFO): images/pipe.png"]
    assert summary_.added == 1 and dict(summary_.sources[0].errors) == {"unreadable image": 1}


# ---- the collect and release readers go through the same bounds ---------------------------------

def test_collect_names_a_deep_line_and_an_overlong_prompt_and_keeps_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("SILKIE_MAX_TEXT_CHARS", "1000")
    (tmp_path / "pic.png").write_bytes(png())
    rows = [json.dumps({"question": "What is shown?", "picture": "pic.png"}).encode() + b"\n",
            b'{"question": ' + b"[" * 10_000 + b"]" * 10_000 + b"}\n",
            json.dumps({"question": "x" * 1001, "picture": "pic.png"}).encode() + b"\n",
            json.dumps({"question": "And the colour?", "picture": "pic.png"}).encode()]  # no final newline
    (tmp_path / "rows.jsonl").write_bytes(b"".join(rows))
    summary = collect([f"jsonl[prompt=question,image=picture]={tmp_path / 'rows.jsonl'}"],
                      tmp_path / "run" / "instructions.jsonl", n=10)
    kept = [json.loads(line)["prompt"] for line in (tmp_path / "run" / "instructions.jsonl").read_text().splitlines()]
    assert sorted(kept) == ["And the colour?", "What is shown?"]  # the last line had no newline: kept
    [stats] = summary.sources
    assert stats.errors == {"bad record": 1, "prompt too long": 1}
    skipped = (tmp_path / "run" / "collect_skipped.jsonl").read_text()
    assert "nested more than 64 levels" in skipped and "over the limit of 1,000" in skipped


def test_a_release_row_with_an_overlong_response_is_flagged_and_the_rest_built(tmp_path, monkeypatch):
    monkeypatch.setenv("SILKIE_MAX_TEXT_CHARS", "1000")
    ratings = {aspect: {"Rating": "4", "Rationale": "ok"} for aspect in
               ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")}
    rows = [{"id": f"r{i}", "prompt": "Describe it.", "models": ["a", "b"],
             "completions": [{"model": m, "response": ("long " * 300) if (i, m) == (1, "b") else "Fine.",
                              "annotations": ratings} for m in ("a", "b")]} for i in range(3)]
    (tmp_path / "release.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = BuildReport()
    listed = list(release_rows(tmp_path / "release.jsonl", None, report))
    assert report.counts["invalid_rows"] == 1 and len(listed) == 2
    assert any("response of 'b' is 1,500 characters, over the limit of 1,000" in str(entry)
               for entry in report.flagged)
