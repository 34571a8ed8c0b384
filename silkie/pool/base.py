"""What every generation backend takes and returns.

A backend turns a batch of (image, conversation) into texts, one result per request, never
raising for a single bad item: the item's error is recorded and the batch goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image


@dataclass
class Request:
    key: str  # what the caller matches results by, e.g. the instruction id
    image: Image.Image | None  # decoded, upright RGB (silkie.io.load_image)
    messages: list[dict]  # a conversation, e.g. silkie.schema.user_turn(prompt)
    file: Path | None = None  # the file `image` was decoded from: a remote backend may send it as it is


@dataclass
class Result:
    key: str
    text: str | None = None
    error: str | None = None  # one line; text is None when set
    usage: dict = field(default_factory=dict)  # e.g. {"prompt_tokens": .., "completion_tokens": ..}


@dataclass
class GenerationParams:
    """Decoding settings; greedy by default. Stored in each completion's `generation` field."""
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


class Backend(Protocol):
    name: str  # the model's name in the pool, written to each completion record

    def generate(self, requests: list[Request], params: GenerationParams) -> list[Result]:
        """One Result per request, in the same order."""
        ...

