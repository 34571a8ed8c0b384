"""M3IT (`MMInstruction/M3IT`, Li et al. 2023): classic vision-language tasks under written instructions.

Layout: JSONL, one file or a folder of them (all `*.jsonl` below it, in sorted order), one
record per line as the dataset's loader yields it:
    {"instruction": "Answer the question using the image.", "inputs": "How many buses are there?",
     "image_base64_str": ["/9j/4AAQ..."], "outputs": "..."}
Images are inline (base64), so no images root is needed; only the first image of a record is
used (video tasks carry several frames). The prompt is the instruction, then the inputs on the
next line when there are any. Field names checked against the project page's loading example
and the Hub viewer's columns; `input` is accepted too, as raw task files may spell it.
"""

from __future__ import annotations

from collections.abc import Iterator

from silkie.sources.base import Ids, Problem, SourceItem, Spec, decode_base64, first, json_rows


def _first_image(reload, id: str):
    return lambda: decode_base64(first(reload().get("image_base64_str")), id)


def read(spec: Spec) -> Iterator[SourceItem | Problem]:
    ids = Ids(spec.label)
    for row in json_rows(spec.path, ids, suffixes=(".jsonl",)):
        if isinstance(row, Problem):
            yield row
            continue
        id = ids(row.where)
        record = row.record
        instruction = record.get("instruction")
        inputs = record.get("inputs", record.get("input"))
        if not isinstance(instruction, str) or not instruction.strip():
            yield Problem(id, "no prompt", f"{id}: no `instruction`")
            continue
        parts = [instruction.strip()] + ([inputs.strip()] if isinstance(inputs, str) and inputs.strip() else [])
        images = record.get("image_base64_str")
        meta = {"images_in_record": len(images) if isinstance(images, list) else 1}
        yield SourceItem(id, "\n".join(parts), meta, _first_image(row.reload, id))
