"""What every source reader shares: the spec it is given, the items it yields, ids, image fetchers.

A reader turns one dataset release into `SourceItem`s (text in memory, image fetched only when the
sampler keeps the item) and `Problem`s (a record it could not use, with a short reason).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silkie import InputError
from silkie.io import ImageError, RecordError, SpecialFileError, jsonl_lines, resolve_inside

IMAGE_MARKER = "<image>"  # LLaVA-style placeholder for where the image goes in a turn
HUMAN_ROLES = ("human", "user")


@dataclass(frozen=True)
class Spec:
    """One `--source NAME[OPTIONS][=PATH]`, resolved: what a reader needs to read it."""
    name: str  # the reader, e.g. "llava" or "jsonl"
    label: str  # what records, ids, quotas and the summary call it (`name=` option, else `name`)
    path: Path | str | None  # a str only for a Hub dataset id
    options: dict[str, str] = field(default_factory=dict)
    images_root: Path | None = None  # where relative image paths of this source resolve
    n: int = 0  # the run's --n and --seed: only a generated source (mini) needs them
    seed: int = 0


@dataclass(frozen=True, slots=True)
class SourceItem:
    id: str
    prompt: str
    meta: dict
    image: Callable[[], bytes]  # the image's bytes, read only when the item is kept; raises Problem


class Problem(InputError):
    """A record that cannot become an instruction: `reason` is short and countable, str() says more."""

    def __init__(self, id: str, reason: str, detail: str):
        super().__init__(detail)
        self.id = id
        self.reason = reason


class Ids:
    """Source-prefixed ids, unique within the source.

    Original ids are kept where the release has them; a repeat (LLaVA-Instruct lists an image's
    conversation, detail and reasoning samples under one id) gets -1, -2, ... in file order.
    """

    def __init__(self, label: str):
        self.label = label
        self.used: set[str] = set()

    def __call__(self, key: Any) -> str:
        base = f"{self.label}-{key}"
        id, repeat = base, 0
        while id in self.used:
            repeat += 1
            id = f"{base}-{repeat}"
        self.used.add(id)
        return id


def strip_marker(text: str) -> str:
    return text.replace(IMAGE_MARKER, "").strip()


def first_human_turn(conversations: Any) -> tuple[str | None, int]:
    """The first human turn's text (marker stripped) and how many human turns there are."""
    if not isinstance(conversations, list):
        return None, 0
    human = [t.get("value") for t in conversations if isinstance(t, dict) and t.get("from") in HUMAN_ROLES]
    if not human or not isinstance(human[0], str):
        return None, len(human)
    return strip_marker(human[0]) or None, len(human)


def file_image(root: Path | None, relpath: str, id: str) -> Callable[[], bytes]:
    """A fetcher for an image file named relative to `root`; a path that leaves the root is refused,
    and so is a FIFO, device or socket (reading one could block or never end)."""
    def read() -> bytes:
        if root is None:
            raise Problem(id, "missing image", f"{relpath}: no images root to find it in (give images=DIR)")
        try:
            path = resolve_inside(root, relpath)
        except SpecialFileError as e:
            raise Problem(id, "unreadable image", str(e)) from None
        except ImageError:
            raise Problem(id, "image outside images root", f"{relpath!r} leaves the images root {root}") from None
        try:
            return path.read_bytes()
        except OSError as e:
            raise Problem(id, "missing image", f"{root / relpath}: {e.strerror}") from None
    return read


def first(value: Any) -> Any:
    """A list's first item (None if empty); anything else as it is. Instructions take one image."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def decode_base64(text: Any, id: str) -> bytes:
    if not isinstance(text, str):
        raise Problem(id, "no image", f"expected a base64 string, got {type(text).__name__}")
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Problem(id, "bad base64", f"image is not valid base64: {e}") from None


@dataclass(frozen=True)
class RawRecord:
    where: str  # the record's position: "17", or "task.file.17" inside a folder
    record: dict
    reload: Callable[[], dict]  # the record again; JSONL re-reads it, so inline images need not stay in memory


def _files(path: Path, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    if not path.is_dir():
        return [("", path)]
    found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
    if not found:
        raise InputError(f"no {' or '.join(suffixes)} files under {path}")
    return [(p.relative_to(path).with_suffix("").as_posix().replace("/", ".") + ".", p) for p in found]


def _reloader(path: Path, offset: int) -> Callable[[], dict]:
    def reload() -> dict:
        with open(path, "rb") as f:
            f.seek(offset)
            return json.loads(f.readline())
    return reload


def _jsonl_rows(prefix: str, path: Path, ids: Ids) -> Iterator[RawRecord | Problem]:
    # the one JSONL reader: bounded lines and nesting, a last line without its newline kept when whole
    for index, (_, offset, record) in enumerate(jsonl_lines(path)):
        where = f"{prefix}{index}"
        if isinstance(record, RecordError):
            yield Problem(ids(where), "bad record", str(record))
        else:
            yield RawRecord(where, record, _reloader(path, offset))


def _json_rows(prefix: str, path: Path, ids: Ids) -> Iterator[RawRecord | Problem]:
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InputError(f"{path}: not a JSON file: {type(e).__name__}: {str(e)[:200]}") from None
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # MiniGPT-4-style {"annotations": [...]}, as LRV ships it
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of records")
    for index, record in enumerate(data):
        where = f"{prefix}{index}"
        if isinstance(record, dict):
            yield RawRecord(where, record, lambda record=record: record)
        else:
            yield Problem(ids(where), "bad record", f"{path}: record {index} is not a JSON object")


def json_rows(path: Path, ids: Ids, suffixes: tuple[str, ...] = (".json", ".jsonl")) -> Iterator[RawRecord | Problem]:
    """The records of a JSON array or JSONL file, or of every such file under a folder (sorted)."""
    for prefix, file in _files(path, suffixes):
        rows = _jsonl_rows if file.suffix == ".jsonl" else _json_rows
        yield from rows(prefix, file, ids)
