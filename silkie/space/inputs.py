"""What a visitor sends, checked before any of it reaches a model: each check ends in an
InputError the page shows as it is, never a traceback."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from silkie import InputError

__all__ = ["MAX_UPLOAD_BYTES", "MAX_PIXELS", "MAX_PROMPT_CHARS", "MAX_NEW_TOKENS", "MAX_ANSWER_CHARS",
           "UPLOADS_MAX_AGE_S", "UPLOADS_MAX_BYTES", "UPLOAD_SWEEP_S", "read_image", "check_prompt", "check_answers",
           "check_params", "visitor"]

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_PIXELS = 4096 * 4096  # decoding is paid in full before the processor shrinks the image
MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 512
# What MAX_NEW_TOKENS tokens can decode to, with room to spare (~16 characters a token). The panes
# never hold more, but the judge endpoint takes any text a caller sends, and a paid judge is sent it.
MAX_ANSWER_CHARS = 8000
# Uploads land in Gradio's folder before any handler sees them (and many never reach one): every
# UPLOAD_SWEEP_S seconds those older than UPLOADS_MAX_AGE_S are deleted, then the oldest until the
# rest fit in UPLOADS_MAX_BYTES; at shutdown, all of them. The age outlasts a visit: "Judge" reads
# again the upload "Ask" was sent, and a visitor back later is asked to upload it again.
UPLOADS_MAX_AGE_S = 3600
UPLOADS_MAX_BYTES = 2**30
UPLOAD_SWEEP_S = 5


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
    try:
        size = os.path.getsize(image)
    except FileNotFoundError:  # swept away (see UPLOADS_MAX_AGE_S)
        raise InputError("That upload has expired: upload the image again.") from None
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


def check_answers(answers: list[str]) -> list[str]:
    """The answers to judge, stripped: none empty, none longer than MAX_ANSWER_CHARS."""
    texts = [(answer or "").strip() for answer in answers]
    if not all(texts):
        raise InputError("Ask first: the judge rates the answers shown.")
    longest = max(len(text) for text in texts)
    if longest > MAX_ANSWER_CHARS:
        raise InputError(f"An answer is {longest} characters long; the judge takes up to {MAX_ANSWER_CHARS}, "
                         f"more than the {MAX_NEW_TOKENS} new tokens a pane holds.")
    return texts


def visitor(host: str | None, forwarded: str | None) -> str:
    """Who is asking, for the judge's per-visitor allowance: the address the request came from or,
    when that is a proxy's (a private address, as a Hugging Face Space's front end is), the address
    the proxy wrote last in X-Forwarded-For. Entries before it are the visitor's own to invent, and a
    session hash is chosen by the client, so neither names anyone. Should a proxy's address be taken
    for a visitor's, visitors share one allowance: stricter, never looser."""
    try:
        proxied = host is not None and ipaddress.ip_address(host).is_private  # loopback counts
    except ValueError:
        proxied = False
    if proxied and forwarded and forwarded.split(",")[-1].strip():
        return forwarded.split(",")[-1].strip()
    return host or "unknown"


def check_params(max_new_tokens, temperature, top_p):
    from silkie.pool.base import GenerationParams

    try:
        tokens, temperature, top_p = int(max_new_tokens), float(temperature), float(top_p)
    except (TypeError, ValueError):
        raise InputError("The generation settings must be numbers.") from None
    if not (1 <= tokens <= MAX_NEW_TOKENS and 0 <= temperature <= 2 and 0 < top_p <= 1):  # NaN fails too
        raise InputError(f"Settings out of range: max new tokens 1-{MAX_NEW_TOKENS}, temperature 0-2, top-p 0-1.")
    return GenerationParams(max_new_tokens=tokens, temperature=temperature, top_p=top_p)
