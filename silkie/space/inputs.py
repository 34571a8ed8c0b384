"""What a visitor sends, checked before any of it reaches a model: each check ends in an
InputError the page shows as it is, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from silkie import InputError

__all__ = ["MAX_UPLOAD_BYTES", "MAX_PIXELS", "MAX_PROMPT_CHARS", "MAX_NEW_TOKENS", "read_image", "check_prompt",
           "check_params"]

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_PIXELS = 4096 * 4096  # decoding is paid in full before the processor shrinks the image
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 512


def read_image(image):
    """An RGB image from an upload (a path Gradio has confined to its upload folder) or from an
    image already in memory (a PIL image), or an InputError saying why not. A file is decoded from
    its bytes, so no server path reaches the message."""
    from PIL import Image

    from silkie.io import ImageError, load_image

    if isinstance(image, Image.Image):
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InputError(f"That image has {width}x{height} pixels; the limit is {MAX_PIXELS}.")
        return image if image.mode == "RGB" else image.convert("RGB")
    if not image:
        raise InputError("Upload an image first.")
    size = os.path.getsize(image)
    if size > MAX_UPLOAD_BYTES:
        raise InputError(f"That file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        return load_image(Path(image).read_bytes(), max_pixels=MAX_PIXELS)
    except ImageError as error:
        raise InputError(f"That image cannot be used: {error}") from None


def check_prompt(prompt) -> str:
    prompt = (prompt or "").strip()
    if not prompt:
        raise InputError("Type a question about the image.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(f"The question is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    return prompt


def check_params(max_new_tokens, temperature, top_p):
    from silkie.pool.base import GenerationParams

    try:
        tokens, temperature, top_p = int(max_new_tokens), float(temperature), float(top_p)
    except (TypeError, ValueError):
        raise InputError("The generation settings must be numbers.") from None
    if not (1 <= tokens <= MAX_NEW_TOKENS and 0 <= temperature <= 2 and 0 < top_p <= 1):  # NaN fails too
        raise InputError(f"Settings out of range: max new tokens 1-{MAX_NEW_TOKENS}, temperature 0-2, top-p 0-1.")
    return GenerationParams(max_new_tokens=tokens, temperature=temperature, top_p=top_p)
