"""Resumable JSONL stores, content-addressed images and safe image decoding.

Every stage reads the previous stage's JSONL and appends to its own, skipping keys already
written, so a stage killed at any point (even SIGKILL) can be rerun without loss or duplication.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import io
import json
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from silkie import InputError, one_line

MAX_PIXELS = 40_000_000
# Pillow format name -> file extension; anything else is refused even if Pillow could read it.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


class RecordError(InputError):
    """A record that cannot be used; the message names it (file:line and/or id) and says why."""


class ImageError(InputError):
    """An image that cannot be used; the message names the file and says why."""


def read_jsonl(path) -> Iterator[tuple[int, dict | RecordError]]:
    """Yield (line_number, record), or (line_number, RecordError) for a line that is unusable.

    A final line without its newline is a write torn by a kill: it was never acknowledged to
    the writer's caller, so it is skipped silently rather than reported.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return
            if not raw.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                yield number, RecordError(f"{where}: invalid UTF-8 at byte {e.start}")
                continue
            except json.JSONDecodeError as e:
                yield number, RecordError(f"{where}: invalid JSON: {e.msg} at column {e.colno}")
                continue
            if not isinstance(record, dict):
                kind = _JSON_TYPES.get(type(record), type(record).__name__)
                yield number, RecordError(f"{where}: expected a JSON object, got {kind}")
                continue
            yield number, record


def _complete_length(f) -> int:
    """Offset just past the last newline of a binary file: what follows is a torn write."""
    pos = f.seek(0, os.SEEK_END)
    while pos > 0:
        step = min(pos, 1 << 16)
        f.seek(pos - step)
        newline = f.read(step).rfind(b"\n")
        if newline >= 0:
            return pos - step + newline + 1
        pos -= step
    return 0


class JsonlWriter:
    """Append-only JSONL output that remembers which keys it already holds.

    `key` names the fields that identify a record, e.g. ("id",) or ("id", "model").
    Records are buffered and written `flush_every` at a time; a kill loses at most the
    unflushed ones (a rerun recomputes them) and leaves at most one torn line, which the
    next writer truncates.
    """

    def __init__(self, path, key=("id",), flush_every: int = 64):
        self.path = Path(path)
        self.key = tuple(key)
        self.flush_every = flush_every
        self._pending: list[bytes] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")  # noqa: SIM115 - held open until close()
        try:
            # Two processes appending to one file would duplicate work and interleave lines.
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RuntimeError(f"{self.path} is already being written by another writer") from None
        complete = _complete_length(self._file)
        if complete < os.fstat(self._file.fileno()).st_size:
            self._file.truncate(complete)
        self.done: set[tuple] = set()
        for _, record in read_jsonl(self.path):
            if isinstance(record, dict):
                with contextlib.suppress(RecordError):
                    self.done.add(self.key_of(record))

    def key_of(self, record: dict) -> tuple:
        who = f"{self.path}: record {record['id']!r}" if "id" in record else f"{self.path}: record"
        values = []
        for field in self.key:
            if field not in record:
                raise RecordError(f"{who} has no {field!r} field")
            if isinstance(record[field], (dict, list)):
                raise RecordError(f"{who}: key field {field!r} must be a string or number")
            values.append(record[field])
        return tuple(values)

    def __contains__(self, key: tuple) -> bool:
        return tuple(key) in self.done

    def write(self, record: dict) -> bool:
        """Append `record` unless its key is already written; return whether it was appended."""
        key = self.key_of(record)
        if key in self.done:
            return False
        # Encode before marking done, so a record that cannot be serialized is not skipped later.
        line = (json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")
        self.done.add(key)
        self._pending.append(line)
        if len(self._pending) >= self.flush_every:
            self.flush()
        return True

    def flush(self) -> None:
        if self._pending:
            # One write per batch of whole lines: only the last line can ever be torn.
            self._file.write(b"".join(self._pending))
            self._file.flush()
            self._pending.clear()

    def close(self) -> None:
        if self._file.closed:
            return
        self.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _image_errors(name: str):
    """Turn everything Pillow raises for bad input into one-line ImageErrors naming the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageError:
            raise
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
            raise ImageError(f"cannot read image: {name}: {e.strerror}") from None
        except UnidentifiedImageError:
            allowed = ", ".join(IMAGE_FORMATS)
            raise ImageError(f"not an image in an allowed format ({allowed}): {name}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"image too large: {name}: {one_line(e)}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"truncated or corrupt image: {name}: {one_line(e)}") from None


def _decode(fp, name: str, max_pixels: int) -> Image.Image:
    """Open, check and fully decode an image; the format is sniffed from content, not name."""
    # Leaving the `with` closes a file Pillow opened (an animated GIF would keep it open).
    with Image.open(fp, formats=list(IMAGE_FORMATS)) as image:
        width, height = image.size
        # Checked from the header, before any pixel memory is allocated.
        if width * height > max_pixels:
            raise ImageError(f"image too large: {name}: {width}x{height} pixels exceeds the "
                             f"limit of {max_pixels}")
        image.load()  # a GIF stays on its first frame
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        # 16-bit grayscale PNG: convert() would clip samples to 255 instead of scaling them.
        return image.point(lambda v: v / 256).convert("RGB")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode bytes or a file into an upright RGB image, or raise ImageError saying why."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        fp, name = io.BytesIO(source), f"<{len(source)} bytes>"
    else:
        fp, name = source, str(source)
    with _image_errors(name):
        image = _decode(fp, name, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(image))


def check_image(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """A cheap check of image bytes (format, size from the header, structure) without decoding
    pixels; returns the file extension. For bulk paths where a full decode would dominate."""
    name = f"<{len(data)} bytes>"
    with _image_errors(name), Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS)) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"image too large: {name}: {width}x{height} pixels exceeds the limit of {max_pixels}")
        image.verify()
        # verify() does not decode JPEG data; a file cut short lacks its end-of-image marker.
        if image.format == "JPEG" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ImageError(f"truncated or corrupt image: {name}: no JPEG end marker")
        return IMAGE_FORMATS[image.format]


def store_image(data: bytes, images_dir, max_pixels: int = MAX_PIXELS) -> str:
    """Store valid image bytes, unchanged, under their hash; return "<images dir name>/<file>".

    The bytes are kept as given (not re-encoded), so the name depends only on the input, not
    on the Pillow version.
    """
    name = f"<{len(data)} bytes>"
    with _image_errors(name):
        extension = IMAGE_FORMATS[_decode(io.BytesIO(data), name, max_pixels).format]
    images_dir = Path(images_dir)
    file_name = f"{hashlib.sha256(data).hexdigest()[:16]}.{extension}"
    path = images_dir / file_name
    if not path.exists():
        images_dir.mkdir(parents=True, exist_ok=True)
        temp = images_dir / f".{file_name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(temp, "xb") as f:
                f.write(data)
                # Durable before any record can point at it: a record is never rewritten.
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    return f"{images_dir.name}/{file_name}"


def resolve_inside(root, relpath) -> Path:
    """Resolve a record's relative image path, refusing any that lands outside `root`."""
    if Path(relpath).is_absolute():
        raise ImageError(f"image path must be relative to the run folder: {relpath}")
    base = Path(root).resolve()
    try:
        path = (base / relpath).resolve()  # follows symlinks, so a link cannot smuggle a path out
    except (OSError, ValueError) as e:  # a symlink loop, a NUL byte
        raise ImageError(f"bad image path {relpath!r} in the run folder {base}: {e}") from None
    if not path.is_relative_to(base):
        raise ImageError(f"image path escapes the run folder {base}: {relpath}")
    return path


_KINDS = {"instruction": "check_instruction", "completion": "check_completion", "annotation": "check_annotation"}


def shard_path(path, index: int, count: int) -> Path:
    """Where shard `index` of `count` writes: completions.jsonl -> completions.shard-0-of-4.jsonl."""
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{index}-of-{count}{path.suffix}")


def stage_files(path) -> list[Path]:
    """A stage's output as it lies on disk: the file and any shards of it, read as one file."""
    path = Path(path)
    shards = sorted(path.parent.glob(f"{glob.escape(path.stem)}.shard-*-of-*{path.suffix}"))
    return ([path] if path.exists() else []) + shards


def count_lines(path) -> int:
    """Non-blank lines of a stage's file and its shards: the records a stage summary reports."""
    return sum(sum(1 for line in open(p, "rb") if line.strip()) for p in stage_files(path))


def read_stage(path) -> Iterator[tuple[int, dict | RecordError]]:
    """read_jsonl over a file and its shards; missing altogether is an error, as for one file."""
    files = stage_files(path)
    if not files:
        raise FileNotFoundError(f"no such file (or shards of it): {path}")
    for file in files:
        yield from read_jsonl(file)


def record_kind(path, kind: str | None = None) -> str:
    """The record type a stage file holds: `kind` if given, else from its name."""
    kind = kind or next((k for k in _KINDS if Path(path).name.startswith(k)), None)
    if kind not in _KINDS:
        raise InputError(f"cannot tell the record type of {Path(path).name}; name it with --kind")
    return kind


def read_checked(path, kind: str | None = None, images: bool = True) -> Iterator[tuple[int, dict | InputError]]:
    """read_jsonl plus the stage's schema check (and, for instructions, the image), record by record.

    `kind` defaults to the file name (instructions.jsonl -> instruction). Each bad record comes back
    as a one-line error naming the file, line and id, so the caller counts it and carries on.
    """
    from silkie import schema

    path = Path(path)
    check = getattr(schema, _KINDS[record_kind(path, kind)])
    for number, record in read_stage(path):
        if isinstance(record, RecordError):
            yield number, record
            continue
        try:
            check(record)
            if "image" in record and images:
                load_image(resolve_inside(path.parent, record["image"]))
        except InputError as error:
            yield number, RecordError(f"{path}:{number}: {error}")
            continue
        yield number, record


class CompletionIndex:
    """A completions file (and its shards) by id, in a temporary SQLite file: memory stays flat
    however large the run. Bad records go to `on_bad` (an InputError each) and are left out."""

    def __init__(self, path, on_bad=None):
        import sqlite3
        import tempfile

        self._scratch = tempfile.TemporaryDirectory()
        self._db = sqlite3.connect(str(Path(self._scratch.name) / "completions.sqlite"))
        self._db.execute("CREATE TABLE c (id TEXT, model TEXT, seq INTEGER, response TEXT, error TEXT, "
                         "PRIMARY KEY (id, model))")
        for seq, (_, record) in enumerate(read_checked(path, "completion")):
            if isinstance(record, InputError):
                if on_bad:
                    on_bad(record)
                continue
            self._db.execute("INSERT OR IGNORE INTO c VALUES (?, ?, ?, ?, ?)",
                             (record["id"], record["model"], seq, record["response"], record.get("error")))
        self._db.commit()

    def of(self, record_id: str) -> list[tuple[str, str, str | None]]:
        """(model, response, error) of every completion of an instruction, in file order."""
        return self._db.execute("SELECT model, response, error FROM c WHERE id = ? ORDER BY seq",
                                (record_id,)).fetchall()

    def response(self, record_id: str, model: str) -> str | None:
        """The text of a successful completion, or None (missing or failed)."""
        found = self._db.execute("SELECT response FROM c WHERE id = ? AND model = ? AND error IS NULL",
                                 (record_id, model)).fetchone()
        return found[0] if found else None

    def close(self) -> None:
        self._db.close()
        self._scratch.cleanup()

    def __enter__(self) -> CompletionIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
