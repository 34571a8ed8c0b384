"""Any JSONL file (`jsonl`) or `datasets` dataset (`hub`) whose rows hold a prompt and an image.

Options, in the source's brackets (`--source "jsonl[prompt=question,image=img_b64,image_type=base64]=data.jsonl"`):
- `prompt`: the prompt's field (default "prompt"); an `<image>` marker in it is removed.
- `image`: the image's field (default "image"), holding per `image_type`:
  `path` (a file name relative to the images root; the default for `jsonl`), `base64`
  (optionally a data URL), or `bytes` (raw bytes or a `datasets` Image cell; the default for a
  `hub` column of Image type). In a list of images the first is used.
- `id`: a field holding the record's own id (default: its position in the file).
- `hub` only: `split` (default "train") and `config`.
- `name`: what to call the source (default "jsonl"/"hub"); the paper's names (e.g. `pmc-vqa`,
  `llava-med`, `pca-eval`) pick up their paper quota.

Layout for `jsonl`: a JSON array or JSONL file, or a folder of them. For `hub`: anything
`datasets.load_dataset` opens (a Hub dataset id when online, or a local dataset folder); image
columns are read undecoded, so the stored bytes are the dataset's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from silkie import InputError
from silkie.sources.base import (
    Ids,
    Problem,
    SourceItem,
    Spec,
    decode_base64,
    file_image,
    first,
    json_rows,
    strip_marker,
)

IMAGE_TYPES = ("path", "base64", "bytes")


def _image_bytes(value: Any, kind: str, spec: Spec, id: str) -> bytes:
    value = first(value)  # several images per row (video frames, TRL's `images`): the first
    if kind == "base64":
        return decode_base64(value, id)
    if kind == "bytes" and isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if kind == "bytes" and isinstance(value, dict):  # a `datasets` Image cell: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, str) and value:
        return file_image(spec.images_root, value, id)()
    raise Problem(id, "no image", f"{id}: no usable image ({kind}) in the image field")


def _item(spec: Spec, ids: Ids, row: dict, where: str, fetch: Callable[[], Any], kind: str) -> SourceItem | Problem:
    """One row as an item; `fetch` returns the image field's value when the image is needed."""
    id_field, prompt_field = spec.options.get("id"), spec.options.get("prompt", "prompt")
    original = row.get(id_field) if id_field else None
    id = ids(original if original is not None else where)
    prompt = row.get(prompt_field)
    prompt = strip_marker(prompt) if isinstance(prompt, str) else ""
    if not prompt:
        return Problem(id, "no prompt", f"{id}: no text in field {prompt_field!r}")
    meta = {"original_id": str(original)} if original is not None else {}
    return SourceItem(id, prompt, meta, lambda: _image_bytes(fetch(), kind, spec, id))


def _kind(spec: Spec, default: str) -> str:
    kind = spec.options.get("image_type", default)
    if kind not in IMAGE_TYPES:
        raise InputError(f"{spec.label}: image_type must be one of {', '.join(IMAGE_TYPES)}, got {kind!r}")
    return kind


def read_jsonl(spec: Spec) -> Iterator[SourceItem | Problem]:
    ids, kind = Ids(spec.label), _kind(spec, "path")
    field = spec.options.get("image", "image")
    for row in json_rows(spec.path, ids):
        if isinstance(row, Problem):
            yield row
            continue
        # a path is small; inline images are re-read from disk when needed, not kept in memory
        value = row.record.get(field)
        fetch = (lambda value=value: value) if kind == "path" else (lambda row=row: row.reload().get(field))
        yield _item(spec, ids, row.record, row.where, fetch, kind)


def _undecoded(feature):
    """An Image (or list of Image) feature made to yield stored bytes; None for other features."""
    import datasets

    if isinstance(feature, datasets.Image):
        return datasets.Image(decode=False)
    if isinstance(getattr(feature, "feature", None), datasets.Image):
        return datasets.List(datasets.Image(decode=False))
    return None


def read_hub(spec: Spec) -> Iterator[SourceItem | Problem]:
    import datasets

    options = spec.options
    rows = datasets.load_dataset(spec.path, options.get("config"), split=options.get("split", "train"))
    prompt, image, id = options.get("prompt", "prompt"), options.get("image", "image"), options.get("id")
    missing = [c for c in (prompt, image, id) if c and c not in rows.column_names]
    if missing:
        raise InputError(f"{spec.label}: {spec.path} has no column {missing[0]!r}; it has {rows.column_names}")
    undecoded = _undecoded(rows.features[image])
    if undecoded:
        rows = rows.cast_column(image, undecoded)  # keep the stored bytes as they are
    kind, ids = _kind(spec, "bytes" if undecoded else "path"), Ids(spec.label)
    text = rows.select_columns([c for c in (prompt, id) if c])  # reading text never touches the images
    for index, row in enumerate(text):
        yield _item(spec, ids, row, str(index), lambda index=index: rows[index][image], kind)
