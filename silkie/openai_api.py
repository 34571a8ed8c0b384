"""The OpenAI-API plumbing every caller shares: the pool's OpenAI backend, the AI judge (feedback/)
and, through that backend, the benchmark judges (eval/).

Keys are read from the environment variable a config names, only when a client is about to be made,
and are never stored on a config or an object. A server may quote the key back in an error body, so
any text that can carry a server's words passes `scrub` before it reaches a record or a log.

Imports of the SDK happen inside functions: the feedback stage imports this module when it runs the
scene judge, which sends nothing and should not pay for loading the SDK.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import os
from collections.abc import Awaitable, Callable
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
# A reply holds at most max_tokens tokens. A token is ~4 bytes of text, and JSON's \uXXXX escapes
# make one of non-Latin text ~12, so 16 a token bounds an honest reply's text; the slack holds its
# envelope (ids, usage, finish reason) and short replies made of long tokens (runs of spaces).
REPLY_BYTES_PER_TOKEN = 16
REPLY_SLACK_BYTES = 64 * 1024


def max_reply_bytes(max_tokens: int) -> int:
    """The most bytes an honest chat-completion reply asked for at most `max_tokens` can take."""
    return max_tokens * REPLY_BYTES_PER_TOKEN + REPLY_SLACK_BYTES


class ReplyTooLarge(Exception):
    """A chat-completion reply larger than its max_tokens allows (`max_reply_bytes`); the SDK does
    not retry it: the server ignored the request's bound, and asking again would pay again."""


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


def client(key: str, base_url: str | None, timeout: float, max_retries: int,
           before_send: Callable[[object], Awaitable[None]] | None = None, reply_bytes: int | None = None):
    """An async SDK client. Retries are the SDK's: exponential backoff on connection errors,
    timeouts, 408/409/429/5xx, and as long a wait as a Retry-After header asks.

    `timeout` bounds each chat-completion attempt whole, from sending to the reply's last byte
    (see `_bounded_client`); `reply_bytes` (default: none) bounds its reply. `before_send(request)` runs
    before every HTTP attempt, retries included, outside that deadline (the judge paces there)."""
    import openai

    http = _bounded_client()(verify=tls_context(), deadline=timeout, reply_bytes=reply_bytes, before_send=before_send)
    return openai.AsyncOpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=max_retries,
                              http_client=http)


@functools.cache
def _bounded_client() -> type:
    """The SDK's default HTTP client, with each chat-completion attempt bounded in time and size.

    The SDK's timeout is per read: a server that sends a 200 and then a byte a second would hold a
    request forever. So an attempt gets `deadline` seconds in all, after which it is a timeout like
    any other (the SDK retries it; then the caller's rules for a provider in trouble apply). Bytes
    past `reply_bytes` raise ReplyTooLarge and are never read: at once if the reply declares its
    length, else as they arrive. Replies are asked uncompressed, so those bytes are the body's; one
    compressed all the same is checked again once decoded (in memory, deflate's 1000:1 at most).
    An error reply's body (its status is what counts) is cut at the bound instead. Uploads and
    downloads (Files API) are as large and as slow as their content, so only chat completions are
    bounded.
    """
    import httpx2
    import openai

    class Capped(httpx2.AsyncByteStream):
        def __init__(self, inner, limit: int, strict: bool):
            self.inner, self.limit, self.strict = inner, limit, strict

        async def __aiter__(self):
            size = 0
            async for chunk in self.inner:
                size += len(chunk)
                if size > self.limit:
                    if self.strict:
                        raise ReplyTooLarge(f"the reply passed {self.limit} bytes, more than its max_tokens allows")
                    yield chunk[:len(chunk) - (size - self.limit)]
                    return
                yield chunk

        async def aclose(self) -> None:
            await self.inner.aclose()

    class Bounded(openai.DefaultAsyncHttpxClient):
        def __init__(self, *, deadline: float, reply_bytes: int | None, before_send, **kwargs):
            super().__init__(**kwargs)
            self.deadline, self.reply_bytes, self.before_send = deadline, reply_bytes, before_send

        async def send(self, request, *, stream: bool = False, **kwargs):
            if self.before_send is not None:
                await self.before_send(request)
            if stream or not request.url.path.endswith("/chat/completions"):
                return await super().send(request, stream=stream, **kwargs)
            if self.reply_bytes is not None:
                request.headers["accept-encoding"] = "identity"
            try:
                async with asyncio.timeout(self.deadline):
                    response = await super().send(request, stream=True, **kwargs)
                    try:
                        self._bound(response)
                        await response.aread()
                    except BaseException:
                        await response.aclose()
                        raise
            except TimeoutError:
                raise httpx2.ReadTimeout(f"no whole reply within {self.deadline:g} s", request=request) from None
            if self.reply_bytes is not None and response.is_success and len(response.content) > self.reply_bytes:
                raise ReplyTooLarge(f"the reply decoded to {len(response.content)} bytes, more than the "
                                    f"{self.reply_bytes} its max_tokens allows")
            return response

        def _bound(self, response) -> None:
            if self.reply_bytes is None:
                return
            declared = response.headers.get("content-length", "")
            if response.is_success and declared.isdigit() and int(declared) > self.reply_bytes:
                raise ReplyTooLarge(f"the reply declares {int(declared)} bytes, more than the {self.reply_bytes} "
                                    "its max_tokens allows")
            response.stream = Capped(response.stream, self.reply_bytes, strict=response.is_success)

    return Bounded


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
