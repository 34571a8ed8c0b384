"""ComVint (`Richar-Du/ComVint`, Du et al. 2023): complex visual reasoning instructions.

Layout: `data/ComVint/ComVint.jsonl` from the repository, read as LLaVA conversation records one
per line (see `llava`), `image` relative to the images root (Flickr30k / Visual Genome images).
The file's path is from the repository's README; its record layout could not be checked here
and is assumed LLaVA-style, as the model it was built for (LLaVA) reads.
"""

from silkie.sources.llava import conversations as read

__all__ = ["read"]
