"""The mini world as a source: `silkie world make`'s instructions, drawn by the same code.

No path: the items are `silkie.world.make.instructions(n, seed)` with images from
`silkie.world.make.scene_image`, so `collect --source mini` writes what `world make` writes for
the same n and seed. Generated items are already in seeded random order and are taken first to
last, so a quota of q gives `world make --n q`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from silkie.sources.base import SourceItem, Spec


def read(spec: Spec) -> Iterator[SourceItem]:
    from silkie.world.make import instructions, scene_image

    for record, scene in instructions(spec.n, spec.seed):
        yield SourceItem(record["id"], record["prompt"], record["meta"], partial(scene_image, scene))
