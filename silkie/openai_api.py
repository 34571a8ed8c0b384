"""The OpenAI-API plumbing every caller shares: the pool's OpenAI backend, the AI judge (feedback/)
and, through that backend, the benchmark judges (eval/).

Keys are read from the environment variable a config names, only when a client is about to be made,
and are never stored on a config or an object. A server may quote the key back in an error body, so
any text that can carry a server's words passes `scrub` before it reaches a record or a log.

Imports of the SDK happen inside functions: the feedback stage imports this module when it runs the
scene judge, which sends nothing and should not pay for loading the SDK.
"""

from __future__ import annotations

import base64
import functools
import io
import os
from pathlib import Path

from PIL import ExifTags, Image

from silkie import InputError, one_line

NO_KEY = "EMPTY"  # the SDK insists on some key; a server that checks none ignores it
# The counts every OpenAI-compatible server reports; the detail objects vary by server.
USAGE_FIELDS = {"prompt_tokens", "completion_tokens", "total_tokens"}
# Images with at most this many colours (drawings, charts, the mini world's scenes) go as PNG:
# lossless, so thin lines and small print survive, and small. Photos go as JPEG, a tenth the size
# of their PNG and a hundred times faster to encode. Counting stops early, so photos cost ~0.1 ms.
PNG_MAX_COLORS = 4096
# The SDK's classes for 401, 403 and 404: a wrong key, model or URL fails every request alike, so
# such an error stops the run instead of being written on every item.
STOP_ERRORS = ("AuthenticationError", "PermissionDeniedError", "NotFoundError")


def api_key(env: str | None, missing: str) -> str:
    """The key in the environment variable `env` (None: a server that takes no key); `missing` is the
    one-line message when the variable is unset or empty."""
    if env is None:
        return NO_KEY
    key = os.environ.get(env)
    if not key:
        raise InputError(missing)
    return key


def scrub(text: str, key: str) -> str:
    """`text` with the key replaced, for anything a server wrote that is about to be kept."""
    return text.replace(key, "<api key>") if key and key != NO_KEY else text


def stop_error(error: str) -> InputError | None:
    """For an error line (class name first, as `silkie.error_line` writes it) that no other request
    could escape, the error that stops the run; None for an error that is the item's own."""
    if error.startswith(STOP_ERRORS):
        return InputError(f"the judge API refused the request, so every item would fail: {error}")
    return None


@functools.cache
def tls_context():
    """The default TLS context (trusted certificates read from disk, ~20 ms), built once per process
    rather than by every client: the backend makes a client per call."""
    import httpx2

    return httpx2.create_ssl_context()


def client(key: str, base_url: str | None, timeout: float, max_retries: int, event_hooks: dict | None = None):
    """An async SDK client. Retries are the SDK's: exponential backoff on connection errors,
    timeouts, 408/409/429/5xx, and as long a wait as a Retry-After header asks."""
    import openai

    http = openai.DefaultAsyncHttpxClient(verify=tls_context(), event_hooks=event_hooks or {})
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries,
                              http_client=http)


def body_problem(response) -> str | None:
    """What is wrong with a reply the SDK handed back, or None for a chat completion. The SDK returns
    the text of a 200 that is not JSON as it is, e.g. a web page at a wrong base_url."""
    from openai.types.chat import ChatCompletion

    if isinstance(response, ChatCompletion):
        return None
    return f"expected a JSON chat completion, got {one_line(response)[:80]!r}"


def sampling(params) -> dict:
    """A `silkie.pool.base.GenerationParams` as request fields."""
    # `max_tokens`, not `max_completion_tokens`: OpenAI still honours it for GPT-4o-class models,
    # and vLLM, TGI and Ollama all read it, whereas TGI has silently ignored the newer name
    # (huggingface/text-generation-inference#2925). Only reasoning models refuse it, and they
    # refuse temperature 0 as well.
    return {"max_tokens": params.max_new_tokens, "temperature": 0.0 if params.greedy else params.temperature,
            "top_p": params.top_p, "seed": params.seed}


def openai_messages(messages: list[dict], image_url: str | None) -> list[dict]:
    """A conversation in our (TRL's) format as chat-completions messages, every image
    placeholder filled with `image_url`."""
    converted, placeholders = [], 0
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            parts = []
            for part in content:
                if part["type"] == "image":
                    placeholders += 1
                    parts.append({"type": "image_url", "image_url": {"url": image_url}})
                elif part["type"] == "text":
                    parts.append({"type": "text", "text": part["text"]})
                else:
                    raise InputError(f"unsupported content part type {part['type']!r}")
            content = parts
        converted.append({"role": message["role"], "content": content})
    # Either mismatch would silently send a different question than the one recorded.
    if placeholders and image_url is None:
        raise InputError("the conversation has an image placeholder but the request has no image")
    if image_url is not None and not placeholders:
        raise InputError("the request has an image but the conversation has no image placeholder")
    return converted


def file_data_url(path, max_side: int, image: Image.Image | None = None) -> str:
    """An image file as a data URL: the file's own bytes when a server decoding them would see the
    image we would send — an upright RGB or grey JPEG that fits `max_side`, as photo datasets store
    them — so a photo is neither encoded twice (a second loss) nor costs CPU; otherwise the decoded
    image (`image`, if the caller has it already) through `data_url`."""
    from silkie.io import load_image

    try:
        with Image.open(path) as header:  # reads the header only
            as_is = header.format == "JPEG" and header.mode in ("RGB", "L") and max(header.size) <= max_side \
                and header.getexif().get(ExifTags.Base.Orientation, 1) == 1
    except (OSError, ValueError):
        as_is = False  # load_image says what is wrong with it
    if as_is:
        return f"data:image/jpeg;base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"
    return data_url(image if image is not None else load_image(path), max_side)


def data_url(image: Image.Image, max_side: int) -> str:
    """The image as a base64 data URL, scaled down (aspect kept) so its longer side is at most `max_side`."""
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image.getcolors(PNG_MAX_COLORS) is not None:
        image.save(buffer, "PNG")
        mime = "image/png"
    else:
        image.save(buffer, "JPEG", quality=90)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
