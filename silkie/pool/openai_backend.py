"""Generation through a chat-completions API: GPT-4o-class models, or any OpenAI-compatible
server (vLLM, TGI, Ollama) reached by `base_url`.

Requests run concurrently on one event loop, at most `concurrency` in flight. Retries belong to
the openai SDK: it backs off exponentially on connection errors, timeouts, 408/409/429/5xx, and
waits as long as a Retry-After (or retry-after-ms) header asks, up to two minutes. What still
fails after `max_retries` becomes that item's one-line `error`; the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import io
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx2
import openai
from openai.types.chat import ChatCompletion
from PIL import ExifTags, Image

from silkie import InputError, error_line, one_line
from silkie.pool.base import GenerationParams, Request, Result

# Images with at most this many colours (drawings, charts, the mini world's scenes) go as PNG:
# lossless, so thin lines and small print survive, and small. Photos go as JPEG, a tenth the size
# of their PNG and a hundred times faster to encode. Counting stops early, so photos cost ~0.1 ms.
PNG_MAX_COLORS = 4096
MAX_ERROR_CHARS = 300
# Requests prepared ahead of a free slot: enough that a freed slot never waits for an encoding.
ENCODE_AHEAD = 8
# The counts every OpenAI-compatible server reports; the detail objects vary by server.
USAGE_FIELDS = {"prompt_tokens", "completion_tokens", "total_tokens"}


@dataclass
class OpenAIBackend:
    """One pool model served by an OpenAI-compatible API.

    The API key is read from the environment variable `api_key_env` when needed and never kept
    on the object, so its repr, its fields and anything serialized from them hold no secret.
    `api_key_env=None` is for a local server that checks no key. `timeout` is per attempt; the
    SDK retries a timed-out attempt too. `extra_body` is merged into every request's JSON, for
    server-specific options such as vLLM's `top_k`.
    """

    name: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    max_image_side: int = 768
    timeout: float = 60.0
    max_retries: int = 5
    extra_body: dict | None = None

    def __post_init__(self):
        if self.concurrency < 1:
            raise InputError(f"{self.name}: concurrency must be at least 1, got {self.concurrency}")
        self._api_key()  # a missing key should stop a run before any work, not after the local models

    def _api_key(self) -> str:
        if self.api_key_env is None:
            return "EMPTY"  # the SDK insists on some key; keyless servers ignore it
        key = os.environ.get(self.api_key_env)
        if not key:
            where = self.base_url or "the OpenAI API"
            raise InputError(f"{self.name}: set the environment variable {self.api_key_env} to the API key "
                             f"for {where} (or set api_key_env to none for a server that takes no key)")
        return key

    def generate(self, requests: list[Request], params: GenerationParams) -> list[Result]:
        """One Result per request, in order. Each call runs its own event loop and client."""
        batch = self._generate(requests, params, self._api_key())
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(batch)
        # Called from async code (a notebook, an async web handler): asyncio.run cannot nest, so
        # the batch gets a loop of its own in a worker thread.
        with concurrent.futures.ThreadPoolExecutor(1) as worker:
            return worker.submit(asyncio.run, batch).result()

    async def _generate(self, requests: list[Request], params: GenerationParams, key: str) -> list[Result]:
        limit = asyncio.Semaphore(self.concurrency)
        # Requests are prepared (image encoded) before they take a slot, so a slot is held for the
        # server's time alone; `ready` bounds the prepared ones, in flight or waiting for a slot.
        ready = asyncio.Semaphore(self.concurrency + ENCODE_AHEAD)
        client = openai.AsyncOpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout,
                                    max_retries=self.max_retries,
                                    http_client=openai.DefaultAsyncHttpxClient(verify=_tls_context()))
        async with client:
            results = await asyncio.gather(*(self._one(client, ready, limit, r, params) for r in requests))
        for result in results:
            # A server may quote the key back in an error body; it must not reach a record.
            if result.error and self.api_key_env is not None:
                result.error = result.error.replace(key, "<api key>")
        return results

    async def _one(self, client: openai.AsyncOpenAI, ready: asyncio.Semaphore, limit: asyncio.Semaphore,
                   request: Request, params: GenerationParams) -> Result:
        try:
            async with ready:
                url = None
                if request.image is not None:
                    # In a thread: reading, downscaling and PNG compression release the GIL (JPEG encoding does not).
                    encode = functools.partial(file_data_url, request.file, image=request.image) if request.file \
                        else functools.partial(data_url, request.image)
                    url = await asyncio.to_thread(encode, self.max_image_side)
                messages = openai_messages(request.messages, url)
                async with limit:
                    # The SDK's own request path (its retries, auth and timeouts, the same ChatCompletion
                    # back) without `create()`, which walks its forty typed parameters on every call: a
                    # fifth of the client's CPU per request, and the body here is plain JSON already.
                    response = await client.post(
                        "/chat/completions", cast_to=ChatCompletion, options={"security": {"bearer_auth": True}},
                        body={"model": self.model, "messages": messages, **sampling(params), **(self.extra_body or {})})
            if not isinstance(response, ChatCompletion):
                # The SDK hands back the text of a 200 that is not JSON, e.g. a web page at a wrong base_url.
                raise ValueError(f"expected a JSON chat completion, got {one_line(response)[:80]!r}")
            usage = response.usage.model_dump(include=USAGE_FIELDS) if response.usage else {}
            if not response.choices:
                return Result(request.key, error="the response has no choices", usage=usage)
            choice = response.choices[0]
            if choice.message.content is None:
                return Result(request.key, error=f"the reply has no text (finish_reason {choice.finish_reason!r})",
                              usage=usage)
            return Result(request.key, text=choice.message.content, usage=usage)
        except Exception as error:  # one bad item, an unparseable reply included, must not sink the batch
            return Result(request.key, error=error_line(error, MAX_ERROR_CHARS))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The default TLS context (trusted certificates read from disk, ~20 ms), built once per process
    rather than by every client: `generate` makes a client per call."""
    return httpx2.create_ssl_context()


def sampling(params: GenerationParams) -> dict:
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


