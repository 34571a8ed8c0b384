"""Chat with a vision-language model: `load` it (silkie.loader), then `chat(loaded, image, prompt)`.

`load`, `load_for_training`, `resolve` and the `world:` names are re-exported from silkie.loader,
where models are loaded; this module adds one answer through the transformers backend's batch path,
so a chat answer is decoded exactly as a pool completion is.
"""

from __future__ import annotations

from silkie import InputError
from silkie.loader import WORLD_POOL, WORLD_PREFIX, Loaded, load, load_for_training, resolve

__all__ = ["WORLD_POOL", "WORLD_PREFIX", "Loaded", "chat", "load", "load_for_training", "resolve"]


def chat(loaded: Loaded, image, prompt: str, max_new_tokens: int = 128, temperature: float = 0.0) -> str:
    """One answer to one image and prompt (image: a PIL image, a path or bytes)."""
    from silkie.io import load_image
    from silkie.pool.base import GenerationParams, Request
    from silkie.pool.transformers_backend import generate_batch
    from silkie.schema import user_turn

    if not hasattr(image, "mode"):
        image = load_image(image)
    [result] = generate_batch(loaded, [Request("chat", image, user_turn(prompt))],
                              GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature))
    if result.error:
        raise InputError(result.error)
    return result.text
