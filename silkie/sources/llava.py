"""LLaVA-Instruct-150K (`liuhaotian/LLaVA-Instruct-150K`), and the LLaVA conversation format itself.

Layout: a JSON array (or JSONL, or a folder of either) of
    {"id": "000000033471", "image": "000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat ...?"}, {"from": "gpt", "value": "..."}, ...]}
with `image` relative to the images root: COCO train2017 for `llava_instruct_150k.json`
(`--images-root coco/train2017`); checked against public code that reads the released file.
An `id` names the image, not the sample, so it can repeat; repeats get -1, -2, ... in file order.

SVIT, LLaVAR and ComVint ship the same format and read through `conversations` below.
"""

from __future__ import annotations

from collections.abc import Iterator

from silkie.sources.base import Ids, Problem, SourceItem, Spec, file_image, first_human_turn, json_rows


def conversations(spec: Spec) -> Iterator[SourceItem | Problem]:
    ids = Ids(spec.label)
    for row in json_rows(spec.path, ids):
        if isinstance(row, Problem):
            yield row
            continue
        record = row.record
        original = record.get("id", row.where)
        id = ids(original)
        prompt, turns = first_human_turn(record.get("conversations"))
        image = record.get("image")
        if prompt is None:
            yield Problem(id, "no prompt", f"{id}: no human turn with text in `conversations`")
        elif not isinstance(image, str) or not image:
            yield Problem(id, "no image", f"{id}: `image` must name one image file, got {image!r:.60}")
        else:
            meta = {"original_id": str(original), "image_file": image, "human_turns": turns}
            yield SourceItem(id, prompt, meta, file_image(spec.images_root, image, id))


read = conversations
