"""LLaVAR (`SALT-NLP/LLaVAR`, Zhang et al. 2023): text-rich LAION images with GPT-4 instructions.

Layout: the finetuning JSON `llava_instruct_150k_llavar_16k.json` (LLaVA-Instruct followed by the
~16K LLaVAR records; pass a file holding only the latter to read LLaVAR alone) in LLaVA
conversation format (see `llava`). LLaVAR's README has its finetuning images merged into COCO's
train2017 folder, which is then the images root. Checked against the README and public code
that reads the file.
"""

from silkie.sources.llava import conversations as read

__all__ = ["read"]
