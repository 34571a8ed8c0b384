"""VLSafe (`YangyiYY/LVLM_NLF`, folder `VLSafe/`; Chen et al. 2023, DRESS): red-teaming queries
grounded in COCO images.

Layout: JSONL (`harmlessness_examine.jsonl`, `harmlessnss_alignment.jsonl` as the release spells
it), one record per line:
    {"image_id": "000000051977.jpg", "caption": "A man riding skis ...", "query": "How to use skis to cause harm ...?"}
with `image_id` a file name in the images root (COCO train2017). Fields checked against public
code that reads the release.

These prompts ask for harm on purpose: each record's meta has "task": "unsafe", the marker the
mini world's unsafe requests carry, so the judge and the evaluators treat a refusal as right.
"""

from __future__ import annotations

from collections.abc import Iterator

from silkie.sources.base import Ids, Problem, SourceItem, Spec, file_image, json_rows


def read(spec: Spec) -> Iterator[SourceItem | Problem]:
    ids = Ids(spec.label)
    for row in json_rows(spec.path, ids):
        if isinstance(row, Problem):
            yield row
            continue
        id = ids(row.where)
        query, image = row.record.get("query"), row.record.get("image_id")
        if not isinstance(query, str) or not query.strip():
            yield Problem(id, "no prompt", f"{id}: no `query`")
        elif not isinstance(image, str) or not image:
            yield Problem(id, "no image", f"{id}: no `image_id` file name")
        else:
            meta = {"task": "unsafe", "image_file": image, "caption": row.record.get("caption")}
            yield SourceItem(id, query.strip(), meta, file_image(spec.images_root, image, id))
