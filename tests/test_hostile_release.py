"""Hostile release files (issue 19): a damaged or hostile zip entry, or a row with hundreds of
completions, fails or flags only its own row, named in build_report.json with its reason, while the
rest is built. Each crafted input is made here and kept small (no entry over 40 MiB expanded)."""

import io
import json
import struct
import zipfile

from datasets import load_dataset
from PIL import Image

from silkie.build import build
from silkie.schema import ASPECTS
from vlfeedback_dataset import main

# Offsets of fields in a zip entry's local header; its central directory record has each 2 bytes later.
FIELDS = {"flag_bits": (6, "<H"), "method": (8, "<H"), "compress_size": (18, "<I"), "file_size": (22, "<I")}
JPEG = io.BytesIO()
Image.new("RGB", (64, 48), (200, 10, 10)).save(JPEG, format="JPEG")
JPEG = JPEG.getvalue()


def completions(n: int) -> list[dict]:
    return [{"annotations": {a: {"Rating": str(1 + k % 5), "Rationale": "why"} for a in ASPECTS},
             "model": f"m{k}", "response": f"Answer {k}."} for k in range(n)]


def write_release(folder, rows: dict, entries: dict):
    """rows: id -> completions; entries: id -> image bytes (stored) or an iterable of chunks (deflated,
    written piece by piece, so a large bomb costs no memory to make)."""
    jsonl, archive = folder / "vlfeedback_80k.jsonl", folder / "merged_images.zip"
    jsonl.write_text("".join(json.dumps({"id": i, "prompt": "What is shown?", "completions": c}) + "\n"
                             for i, c in rows.items()))
    with zipfile.ZipFile(archive, "w") as z:
        for row_id, data in entries.items():
            info = zipfile.ZipInfo(f"merged_images/{row_id}.jpg")
            info.compress_type = zipfile.ZIP_STORED if isinstance(data, bytes) else zipfile.ZIP_DEFLATED
            with z.open(info, "w") as f:
                for chunk in [data] if isinstance(data, bytes) else data:
                    f.write(chunk)
    return jsonl, archive


def padded(zeros: int):
    """A valid JPEG followed by `zeros` zero bytes (which the image check tolerates as padding)."""
    yield JPEG
    for _ in range(zeros >> 20):
        yield bytes(1 << 20)


def patch(archive, row_id, **values) -> None:
    """Overwrite fields of one entry in both its local header and its central directory record."""
    name = f"merged_images/{row_id}.jpg".encode()
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        local = z.getinfo(name.decode()).header_offset
    central = data.find(b"PK\x01\x02")
    while data[central + 46:central + 46 + struct.unpack_from("<H", data, central + 28)[0]] != name:
        central = data.find(b"PK\x01\x02", central + 4)
    for key, value in values.items():
        offset, form = FIELDS[key]
        struct.pack_into(form, data, local + offset, value)
        struct.pack_into(form, data, central + offset + 2, value)
    archive.write_bytes(bytes(data))


def reasons(out) -> dict:
    return {f["id"]: f["reason"] for f in json.loads((out / "build_report.json").read_text())["flagged"]}


def paired_ids(out) -> list:
    return sorted(r["id"] for split in load_dataset(str(out), "pairs").values() for r in split)


def test_a_corrupt_encrypted_or_cut_zip_entry_fails_only_its_row(tmp_path):
    ids = ["svit-1", "crc-2", "enc-3", "method-4", "lrv-5", "cut-6"]
    jsonl, archive = write_release(tmp_path, {i: completions(4) for i in ids}, dict.fromkeys(ids, JPEG))
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as z:
        crc = z.getinfo("merged_images/crc-2.jpg")
    data[crc.header_offset + 30 + len(crc.filename) + len(JPEG) // 2] ^= 0xFF  # one byte of its data flipped
    archive.write_bytes(bytes(data))
    patch(archive, "enc-3", flag_bits=0x1)  # the encryption flag
    patch(archive, "method-4", method=99)  # AES, which zipfile cannot read
    # The last entry claims more bytes than the archive holds: its data runs into the end of the file.
    patch(archive, "cut-6", compress_size=len(JPEG) + 100_000, file_size=len(JPEG) + 100_000)

    out, report, pairs = build(tmp_path / "out", release=jsonl, images=archive)
    why = reasons(out)
    assert report.counts["rows"] == 6 and report.counts["bad_images"] == 4
    assert set(why) == {"crc-2", "enc-3", "method-4", "cut-6"}
    assert "zip entry 'merged_images/crc-2.jpg' cannot be read: Bad CRC-32" in why["crc-2"]
    assert "is encrypted" in why["enc-3"] and "compression method is not supported" in why["method-4"]
    assert "cut short" in why["cut-6"] or "Overlapped" in why["cut-6"]  # newer Pythons catch the overlap first
    rows = {r["id"]: r for r in load_dataset(str(out), split="train")}
    assert sorted(rows) == sorted(ids) and [i for i in ids if rows[i]["image"] is not None] == ["svit-1", "lrv-5"]
    assert paired_ids(out) == ["lrv-5"] * 6 + ["svit-1"] * 6


def test_a_zip_cut_short_is_a_one_line_error_naming_it(tmp_path, capsys):
    """Its index (the central directory) is at the end, so nothing in it can be found: exit 2, nothing written."""
    jsonl, archive = write_release(tmp_path, {"svit-1": completions(4)}, {"svit-1": JPEG})
    archive.write_bytes(archive.read_bytes()[:len(JPEG) // 2])
    assert main(["build", "--from-release", str(jsonl), "--images", str(archive), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(archive) in err and "not a readable zip" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_zip_bomb_is_refused_by_its_declared_size_and_no_read_passes_the_limit(tmp_path, monkeypatch, capsys):
    limit = 8 << 20
    entries = {"svit-1": JPEG, "bomb-2": padded(40 << 20), "ratio-3": padded(4 << 20), "liar-4": padded(6 << 20),
               "lrv-5": JPEG}
    jsonl, archive = write_release(tmp_path, {i: completions(4) for i in entries}, entries)
    patch(archive, "liar-4", file_size=len(JPEG) + 1000)  # declares less than it holds
    opened, asked, open_, read = [], [], zipfile.ZipFile.open, zipfile.ZipExtFile.read
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k:
                        opened.append(getattr(info, "filename", info)[14:-4]) or open_(self, info, *a, **k))
    monkeypatch.setattr(zipfile.ZipExtFile, "read", lambda self, n=-1: asked.append(n) or read(self, n))

    out = tmp_path / "out"
    assert main(["build", "--from-release", str(jsonl), "--images", str(archive), "--out", str(out),
                 "--max-image-bytes", str(limit)]) == 0
    assert "built" in capsys.readouterr().out
    why = reasons(out)
    assert set(why) == {"bomb-2", "ratio-3", "liar-4"}
    assert f"declares {len(JPEG) + (40 << 20):,} bytes, over the limit of {limit:,}" in why["bomb-2"]
    assert "over 100 times (a zip bomb?): not read" in why["ratio-3"]
    assert "Bad CRC-32" in why["liar-4"]  # read no further than it declared, so its check sum fails
    assert sorted(opened) == ["liar-4", "lrv-5", "svit-1"]  # the bombs were refused before any read
    assert asked and all(0 <= n <= limit + 1 for n in asked)
    rows = {r["id"]: r["image"] is not None for r in load_dataset(str(out), split="train")}
    assert rows == {"svit-1": True, "bomb-2": False, "ratio-3": False, "liar-4": False, "lrv-5": True}
    assert paired_ids(out) == ["lrv-5"] * 6 + ["svit-1"] * 6


def test_a_row_over_the_completion_cap_is_kept_reported_and_pairs_nothing(tmp_path):
    """400 completions made 64,000 pairs from one row; now the row stays in `default` and pairs nothing."""
    no_model = completions(4)
    del no_model[2]["model"]  # a completion without its model no longer stops the planner
    rows = {"svit-1": completions(4), "many-2": completions(400), "lrv-3": no_model}
    jsonl, archive = write_release(tmp_path, rows, dict.fromkeys(rows, JPEG))

    out, report, pairs = build(tmp_path / "out", release=jsonl, images=archive)
    assert report.counts["rows_over_completion_cap"] == 1
    assert reasons(out)["many-2"] == "400 completions, over the cap of 16 (--max-completions): kept in default, " \
                                     "left out of pairs"
    kept = {r["id"]: len(r["models"]) for r in load_dataset(str(out), split="train")}
    assert kept == {"svit-1": 4, "many-2": 400, "lrv-3": 4}
    assert pairs["pairs"] == 12 and pairs["rows_without_pairs"] == {"more than 16 completions": 1}
    assert paired_ids(out) == ["lrv-3"] * 6 + ["svit-1"] * 6


def test_an_extracted_image_over_the_limit_is_refused_unread(tmp_path):
    jsonl, _ = write_release(tmp_path, {"svit-1": completions(4), "big-2": completions(4), "lrv-3": completions(4)}, {})
    folder = tmp_path / "images" / "merged_images"
    folder.mkdir(parents=True)
    (folder / "svit-1.jpg").write_bytes(JPEG)
    (folder / "lrv-3.jpg").write_bytes(JPEG)
    (folder / "big-2.jpg").write_bytes(JPEG + bytes(len(JPEG)))
    out, report, _ = build(tmp_path / "out", release=jsonl, images=tmp_path / "images", max_image_bytes=len(JPEG) + 1)
    assert reasons(out) == {"big-2": f"image unusable: image file {folder / 'big-2.jpg'} is over the limit of "
                                     f"{len(JPEG) + 1:,} bytes (--max-image-bytes): not read"}
    assert paired_ids(out) == ["lrv-3"] * 6 + ["svit-1"] * 6
