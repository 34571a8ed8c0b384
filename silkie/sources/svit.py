"""SVIT (`BAAI/SVIT`, Zhao et al. 2023): GPT-4 instructions about Visual Genome images.

Layout: the release's `format/llava-v1.5/*.json` files, LLaVA conversation format (see `llava`),
with `image` paths as LLaVA-1.5 names them, e.g. "vg/VG_100K_2/2354786.jpg", relative to the
LLaVA-1.5 data root given as the images root. The release card documents this folder and its
LLaVA compatibility; SVIT's own `data/*.json` format is not read (unverified here).
"""

from silkie.sources.llava import conversations as read

__all__ = ["read"]
