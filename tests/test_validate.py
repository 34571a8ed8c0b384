"""Bad input never stops a stage: each bad record gets one line naming it and the reason."""

import io
import json
import struct
import zlib

from PIL import Image

from silkie.cli import main


def png_header_claiming(width, height) -> bytes:
    """A PNG that says it is width x height but holds no pixels: a decompression bomb's calling card."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def encoded(fmt) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_validate_reports_every_bad_record_and_counts_the_rest(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "good.png").write_bytes(encoded("PNG"))
    (images / "text.png").write_text("this is not an image")
    (images / "cut.png").write_bytes(encoded("PNG")[:60])
    (images / "cut.jpg").write_bytes(encoded("JPEG")[:300])
    (images / "bomb.png").write_bytes(png_header_claiming(20000, 20000))
    outside = tmp_path.parent / "outside.png"
    outside.write_bytes(encoded("PNG"))
    (images / "link.png").symlink_to(outside)

    def record(i, image, **extra):
        return json.dumps({"id": f"r{i}", "source": "test", "prompt": "Describe it.", "image": image, **extra})

    lines = [record(1, "images/good.png"), record(2, "images/text.png"), record(3, "images/cut.png"),
             record(4, "images/cut.jpg"), record(5, "images/bomb.png"), record(6, "images/link.png"),
             '{"id": "r7", "prompt": "caf\xe9"}', json.dumps({"id": "r8", "source": "t", "image": "images/good.png"}),
             record(9, "images/missing.png"), record(10, "images/good.png")]
    data = "\n".join(lines).encode("utf-8").replace("caf\xe9".encode(), b"caf\xe9") + b"\n"
    (tmp_path / "instructions.jsonl").write_bytes(data)

    assert main(["validate", str(tmp_path / "instructions.jsonl")]) == 2
    out, err = capsys.readouterr()
    assert "2 valid instruction records, 8 with errors" in out
    errors = err.strip().splitlines()
    assert len(errors) == 8
    expected = {2: "not an image", 3: "truncated or corrupt image", 4: "truncated or corrupt image",
                5: "image too large", 6: "escapes the run folder", 7: "invalid UTF-8",
                8: "instruction 'r8': missing required field 'prompt'", 9: "cannot read image"}
    for line_number, reason in expected.items():
        [message] = [e for e in errors if f"instructions.jsonl:{line_number}:" in e]
        assert reason in message, message


def test_validate_needs_a_known_kind(tmp_path, capsys):
    (tmp_path / "notes.jsonl").write_text("{}\n")
    assert main(["validate", str(tmp_path / "notes.jsonl")]) == 2
    assert "cannot tell the record type of notes.jsonl" in capsys.readouterr().err
