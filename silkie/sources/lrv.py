"""LRV-Instruction (`FuxiaoLiu/LRV-Instruction`, Liu et al. 2023): positive and negative
(nonexistent-object) instructions about Visual Genome images.

Layout: the released JSON, an array (or MiniGPT-4-style {"annotations": [...]}) of
    {"image_id": "2392588", "question": "Is the dog on the sofa asleep?", "answer": "...", "task": "negative"}
with the image at `<image_id>.jpg` in the images root, or in its `VG_100K/` or `VG_100K_2/`
(Visual Genome's own folders). Fields checked against the repository's README and its loader
(which opens `<image_id>.jpg` in one image folder).
"""

from __future__ import annotations

from collections.abc import Iterator

from silkie.sources.base import Ids, Problem, SourceItem, Spec, file_image, json_rows

VG_FOLDERS = ("", "VG_100K/", "VG_100K_2/")


def _vg_image(root, image_id: str, id: str):
    def read() -> bytes:
        names = [f"{folder}{image_id}.jpg" for folder in VG_FOLDERS]
        found = next((name for name in names if root and (root / name).is_file()), names[0])
        return file_image(root, found, id)()
    return read


def read(spec: Spec) -> Iterator[SourceItem | Problem]:
    ids = Ids(spec.label)
    for row in json_rows(spec.path, ids):
        if isinstance(row, Problem):
            yield row
            continue
        id = ids(row.where)  # an image_id has many questions, so the position names the record
        question, image_id = row.record.get("question"), row.record.get("image_id")
        if not isinstance(question, str) or not question.strip():
            yield Problem(id, "no prompt", f"{id}: no `question`")
        elif not isinstance(image_id, (str, int)) or str(image_id) == "":
            yield Problem(id, "no image", f"{id}: no `image_id`")
        else:
            task = row.record.get("task")
            meta = {"image_id": str(image_id), **({"task": task} if isinstance(task, str) else {})}
            yield SourceItem(id, question.strip(), meta, _vg_image(spec.images_root, str(image_id), id))
