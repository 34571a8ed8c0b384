"""Generation through a chat-completions API: GPT-4o-class models, or any OpenAI-compatible
server (vLLM, TGI, Ollama) reached by `base_url`.

Requests run concurrently on one event loop, at most `concurrency` in flight. Retries belong to
the openai SDK: it backs off exponentially on connection errors, timeouts, 408/409/429/5xx, and
waits as long as a Retry-After (or retry-after-ms) header asks, up to two minutes. What still
fails after `max_retries` becomes that item's one-line `error`; the rest of the batch goes on.
Each attempt gets `timeout` seconds whole, and a reply larger than max_tokens allows is an error
unread (`silkie.openai_api.client`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from dataclasses import dataclass

import openai
from openai.types.chat import ChatCompletion

from silkie import InputError, error_line
from silkie.openai_api import (
    USAGE_FIELDS,
    api_key,
    body_problem,
    client,
    data_url,
    file_data_url,
    max_reply_bytes,
    openai_messages,
    sampling,
    scrub,
)
from silkie.pool.base import GenerationParams, Request, Result

MAX_ERROR_CHARS = 300
# Requests prepared ahead of a free slot: enough that a freed slot never waits for an encoding.
ENCODE_AHEAD = 8


@dataclass
class OpenAIBackend:
    """One pool model served by an OpenAI-compatible API.

    The API key is read from the environment variable `api_key_env` when needed and never kept
    on the object, so its repr, its fields and anything serialized from them hold no secret.
    `api_key_env=None` is for a local server that checks no key. `timeout` is per attempt, the
    whole reply included; the SDK retries a timed-out attempt too. `extra_body` is merged into
    every request's JSON, for server-specific options such as vLLM's `top_k`.
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
        where = self.base_url or "the OpenAI API"
        return api_key(self.api_key_env, f"{self.name}: set the environment variable {self.api_key_env} to the API "
                                         f"key for {where} (or set api_key_env to none for a server that takes no key)")

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
        max_tokens = (self.extra_body or {}).get("max_tokens", params.max_new_tokens)  # extra_body wins
        async with client(key, self.base_url, self.timeout, self.max_retries,
                          reply_bytes=max_reply_bytes(max_tokens)) as sdk:
            results = await asyncio.gather(*(self._one(sdk, ready, limit, r, params) for r in requests))
        for result in results:
            if result.error:
                result.error = scrub(result.error, key)
        return results

    async def _one(self, sdk: openai.AsyncOpenAI, ready: asyncio.Semaphore, limit: asyncio.Semaphore,
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
                    response = await sdk.post(
                        "/chat/completions", cast_to=ChatCompletion, options={"security": {"bearer_auth": True}},
                        body={"model": self.model, "messages": messages, **sampling(params), **(self.extra_body or {})})
            problem = body_problem(response)
            if problem:
                raise ValueError(problem)
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
