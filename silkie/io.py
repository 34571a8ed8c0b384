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
import stat
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from silkie import InputError, bound, one_line

MAX_PIXELS = 40_000_000
# Bounds on one JSONL line, far above the real data (the VLFeedback release's longest lines are a few
# KB, nested 5 deep), so a hostile line costs a one-line error, not the memory to hold it or a
# RecursionError. Each is overridden by the environment variable SILKIE_<NAME> (silkie.bound), and the
# line length also by read_jsonl's argument.
MAX_LINE_BYTES = 16 << 20  # 16 MiB, newline not counted
MAX_JSON_DEPTH = 64  # arrays and objects inside one another
# Pillow format name -> file extension; anything else is refused even if Pillow could read it.
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


class RecordError(InputError):
    """A record that cannot be used; the message names it (file:line and/or id) and says why."""


class ImageError(InputError):
    """An image that cannot be used; the message names the file and says why."""


class SpecialFileError(ImageError):
    """An image path naming a FIFO, device or socket: refused before anything opens it."""


def _lines(f, limit: int) -> Iterator[tuple[int, bytes | int]]:
    """(offset, line) of each line of a binary file. A line over `limit` bytes (newline not counted)
    comes back as its length instead, read past in 64 KiB pieces so that it is never held whole."""
    offset = 0
    while line := f.readline(limit + 1):
        start, offset = offset, offset + len(line)
        if len(line) <= limit or line.endswith(b"\n"):
            yield start, line
            continue
        while (piece := f.readline(1 << 16)) and not piece.endswith(b"\n"):
            offset += len(piece)
        offset += len(piece)
        yield start, offset - start - piece.endswith(b"\n")


def _too_deep(value, limit: int) -> bool:
    """Whether a parsed JSON value nests arrays/objects more than `limit` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
                     if isinstance(child, (dict, list)))
    return False


_TOO_DEEP = object()


def _parse(raw: bytes, where: str, depth: int) -> dict | RecordError:
    # A file's last line may lack its newline (many exported files end so): whole, it is a record.
    cut = "" if raw.endswith(b"\n") else "last line cut short (no newline at the end of the file): "
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        return RecordError(f"{where}: {cut}invalid UTF-8 at byte {e.start}")
    except json.JSONDecodeError as e:
        return RecordError(f"{where}: {cut}invalid JSON: {e.msg} at column {e.colno}")
    except RecursionError:  # past ~1,000 levels the decoder itself gives up
        record = _TOO_DEEP
    # Counting brackets is cheap and bounds the depth, so an ordinary line is never walked.
    if record is _TOO_DEEP or raw.count(b"[") + raw.count(b"{") > depth and _too_deep(record, depth):
        return RecordError(f"{where}: JSON nested more than {depth} levels deep (SILKIE_MAX_JSON_DEPTH)")
    if not isinstance(record, dict):
        kind = _JSON_TYPES.get(type(record), type(record).__name__)
        return RecordError(f"{where}: expected a JSON object, got {kind}")
    return record


def jsonl_lines(path, max_line_bytes: int | None = None) -> Iterator[tuple[int, int, dict | RecordError]]:
    """(line number, byte offset, record) for each non-blank line; a RecordError naming file:line
    in place of the record for a line that is unusable (bad UTF-8 or JSON, not an object, nested
    over MAX_JSON_DEPTH, longer than MAX_LINE_BYTES), so the caller counts it and reads on.

    A last line without its newline is a record if it parses; if it does not, it is reported as
    cut short, like any bad line. Only a JsonlWriter, in its own store, cuts such a line off.
    """
    limit = max_line_bytes or bound("MAX_LINE_BYTES", MAX_LINE_BYTES)
    depth = bound("MAX_JSON_DEPTH", MAX_JSON_DEPTH)
    with open(path, "rb") as f:
        for number, (offset, raw) in enumerate(_lines(f, limit), start=1):
            where = f"{path}:{number}"
            if isinstance(raw, int):
                yield number, offset, RecordError(f"{where}: line of {raw:,} bytes is over the limit of "
                                                  f"{limit:,} (SILKIE_MAX_LINE_BYTES); skipped unread")
            elif raw.strip():
                yield number, offset, _parse(raw, where, depth)


def read_jsonl(path, max_line_bytes: int | None = None) -> Iterator[tuple[int, dict | RecordError]]:
    """Yield (line_number, record), or (line_number, RecordError) for a line that is unusable
    (see jsonl_lines)."""
    for number, _, record in jsonl_lines(path, max_line_bytes):
        yield number, record


def _complete_length(f) -> int:
    """Offset just past the last newline of a binary file: what follows is an unfinished line."""
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
    next writer cuts off (saying so). A last line that lacks only its newline is a record:
    the writer adds the newline before appending.
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
        end = os.fstat(self._file.fileno()).st_size
        if complete < end:
            self._mend_tail(complete, end)
        self.done: set[tuple] = set()
        for _, record in read_jsonl(self.path):
            if isinstance(record, dict):
                with contextlib.suppress(RecordError):
                    self.done.add(self.key_of(record))

    def _mend_tail(self, complete: int, end: int) -> None:
        """The file ends without a newline. A last line that parses (or is too long or too deep to
        tell) is kept and given its newline: nothing a user wrote is deleted. One that does not parse
        is a write torn by a kill, never acknowledged to a caller: it is cut off, with a line on stderr."""
        limit = bound("MAX_LINE_BYTES", MAX_LINE_BYTES)
        self._file.seek(complete)
        tail = self._file.read(min(end - complete, limit + 1))
        try:
            if len(tail) <= limit and tail.strip():
                json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._file.truncate(complete)
            print(f"silkie: {self.path}: cut off an unfinished last line ({end - complete:,} bytes) "
                  "left by an interrupted write", file=sys.stderr)
            return
        except RecursionError:
            pass
        self._file.write(b"\n")  # append mode: lands at the end
        self._file.flush()

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


def _decode(fp, name: str, max_pixels: int, check_only: bool = False) -> Image.Image:
    """Open, check and fully decode an image; the format is sniffed from content, not name.

    `check_only` decodes a JPEG at 1/8 scale: libjpeg still reads every coefficient (where corrupt
    data fails) but skips most of the inverse DCT, 1.2 ms instead of 1.8 for a 640x480 photo.
    """
    # Leaving the `with` closes a file Pillow opened (an animated GIF would keep it open).
    with Image.open(fp, formats=list(IMAGE_FORMATS)) as image:
        width, height = image.size
        # Checked from the header, before any pixel memory is allocated.
        if width * height > max_pixels:
            raise ImageError(f"image too large: {name}: {width}x{height} pixels exceeds the "
                             f"limit of {max_pixels}")
        if check_only and image.format == "JPEG":
            image.draft(None, (1, 1))  # the smallest scale libjpeg offers
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
        if isinstance(source, (str, os.PathLike)):
            _refuse_special(source, name)
    with _image_errors(name):
        image = _decode(fp, name, max_pixels)
        return _to_rgb(ImageOps.exif_transpose(image))


def check_image(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """Check image bytes on a bulk path (the dataset build) and return the file extension. Every
    pixel is decoded, as store_image does: verify() passed a PNG whose pixel data was cut short and
    a JPEG whose scan data was garbage, both of which then failed wherever the image was read."""
    name = f"<{len(data)} bytes>"
    with _image_errors(name):
        return IMAGE_FORMATS[_decode(io.BytesIO(data), name, max_pixels, check_only=True).format]


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
    _refuse_special(path, relpath)
    return path


_SPECIAL = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket"))


def _refuse_special(path, name) -> None:
    """Refuse a FIFO, device or socket before anything opens it: opening a FIFO waits for a writer
    forever and a device may never stop reading. A missing path or a folder is left to fail (at
    once) where it is opened, with the error its callers already report."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    for test, kind in _SPECIAL:
        if test(mode):
            raise SpecialFileError(f"not a regular file ({kind}): {name}")


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
    limit = bound("MAX_LINE_BYTES", MAX_LINE_BYTES)
    total = 0
    for file in stage_files(path):
        with open(file, "rb") as f:
            total += sum(1 for _, line in _lines(f, limit) if isinstance(line, int) or line.strip())
    return total


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
