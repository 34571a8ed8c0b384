"""The AI judge behind any OpenAI-compatible chat-completions API: GPT-4o-class models, or an
open-weights judge served by vLLM at `base_url`.

Per request, in this order: the request cache (a hit is free and instant), the concurrency
limit, the budget (the request's worst-case cost is held or it is not sent), the token pacer,
then the SDK, whose retries honour Retry-After. Every HTTP attempt, retries included, passes the
request pacer in an httpx event hook, so retries count against the requests-per-minute limit.
A reply that cannot be read is asked again once, in the same conversation.

Failures are sorted by whether a rerun could fix them: the budget or a provider in trouble
(429/5xx/timeouts after the SDK's retries, a garbled body) defer the item; a refused input
(400, a bad image) or a reply unreadable after the re-ask is the item's error; a wrong key, model
or URL (401/403/404) stops the run, since every item would fail alike.

A server is trusted no further than the request's own bounds: an attempt gets `timeout` seconds
whole (a reply trickled past it is a timeout), and a reply larger than max_tokens allows or usage
the request cannot have used (below zero, more prompt tokens than the worst case the ledger held,
more completion tokens than max_tokens) is the item's error, charged that worst case: asking
again would pay again, and no report may credit the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from silkie import InputError, one_line, openai_api
from silkie.cache import RequestCache, request_key
from silkie.feedback.base import Deferred, Item, Verdict
from silkie.feedback.limits import Pacer, Price, SpendLedger
from silkie.feedback.parse import Parsed, parse_reply
from silkie.feedback.prompts import KINDS, REASK, Prompt, PromptRequest
from silkie.pool.base import GenerationParams
from silkie.schema import user_turn

# Typical reply length per (text, aspect) cell in the paper's layout, for --dry-run estimates.
TOKENS_PER_CELL = 45
MESSAGE_TOKENS = 16  # a generous bound on the chat format's own tokens per message


@dataclass
class JudgeConfig:
    """The judge's settings; presets live in configs/judge/. A field with help text is also a flag of
    `silkie annotate`, which overrides the preset's value."""
    model: str = field(default="gpt-4o", metadata={"help": "judge model name"})
    base_url: str | None = field(default=None, metadata={  # None: the OpenAI API
        "help": "OpenAI-compatible server, e.g. http://localhost:8000/v1"})
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable holding the key (None: a server without keys)
    prompt: str = field(default="all-in-one", metadata={
        "choices": KINDS, "help": "all-in-one (the paper's), one request per aspect, or JSON output with a schema"})
    prompt_template: str | None = field(default=None, metadata={
        "metavar": "FILE", "help": "replaces the all-in-one prompt, e.g. the authors' template text; placeholders "
        "[[instruction_placeholder]], [[text_1_placeholder]].. (see silkie/feedback/prompts.py)"})
    generation: GenerationParams = field(default_factory=lambda: GenerationParams(max_new_tokens=1024))
    max_image_side: int = 768
    image_tokens: int = 765  # the most one image can cost in prompt tokens at max_image_side
    concurrency: int = field(default=16, metadata={"help": "requests in flight"})
    rpm: int | None = field(default=None, metadata={"help": "requests per minute, retries included"})
    # estimated prompt + max completion, as providers count
    tpm: int | None = field(default=None, metadata={"help": "tokens per minute"})
    timeout: float = 120.0  # seconds per attempt, the whole reply included
    max_retries: int = 6
    budget_usd: float | None = field(default=None, metadata={"help": "hard cap on what this run may spend"})
    prices: dict = field(default_factory=dict)  # model -> {input: USD per 1M tokens, output: USD per 1M tokens}
    batch: bool = field(default=False, metadata={"help": "send through the Batch API (half price, resumable)"})
    batch_discount: float = 0.5  # the Batch API's price relative to online requests
    batch_poll_s: float = 60.0
    swap_check: float = field(default=0.0, metadata={
        "metavar": "F", "help": "judge a share F of items again with the order reversed (position consistency)"})
    seed: int = field(default=0, metadata={"help": "seed of the shown order and of the swap-check sample"})

    def __post_init__(self):
        if self.prompt not in KINDS:
            raise InputError(f"unknown prompt {self.prompt!r} (known: {', '.join(KINDS)})")
        if self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}")
        for name in ("rpm", "tpm", "budget_usd"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(f"{name} must be positive, got {value}")
        if not 0 <= self.swap_check <= 1:
            raise InputError(f"swap_check is a share of items, from 0 to 1; got {self.swap_check}")

    @property
    def price(self) -> Price | None:
        entry = self.prices.get(self.model)
        return Price(float(entry["input"]), float(entry["output"])) if entry else None


def load_judge_config(name_or_path: str = "gpt-4o", overrides: dict | None = None) -> JudgeConfig:
    """A preset (configs/judge/NAME.yaml) or YAML file, with each non-None override replacing its key."""
    from silkie.config import load

    return load(JudgeConfig, "judge", name_or_path, overrides)


def api_key(config: JudgeConfig) -> str:
    return openai_api.api_key(config.api_key_env, f"set the environment variable {config.api_key_env} to the judge's "
                              "API key (or set api_key_env to null for a server that takes no key)")


def estimate_tokens(messages: list[dict], image_tokens: int, worst: bool = False) -> int:
    """Prompt tokens of a conversation: typical (~4 characters a token) or a bound no tokenizer
    exceeds (byte-level BPE, which every OpenAI model uses, never makes more tokens than bytes)."""
    total = MESSAGE_TOKENS
    for message in messages:
        total += MESSAGE_TOKENS
        content = message["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part["type"] == "image":
                total += image_tokens
            else:
                total += len(part["text"].encode()) if worst else math.ceil(len(part["text"]) / 4)
    return total


def checked_usage(reported: dict | None, bounds: tuple[int | None, int]) -> tuple[dict, str | None]:
    """The usage to charge for a reply, and what is impossible in the server's report (None: nothing).

    `bounds`: the most prompt tokens (the worst case the ledger held; None: not known) and
    completion tokens (max_tokens) the request can use. A count missing, or a prompt of 0 tokens
    (no honest count), is charged at its bound. A count that is not a number, is below zero or is
    past its bound makes the whole report the server's error, charged at the bounds, never less.
    """
    reported = reported or {}
    for name, bound in zip(("prompt_tokens", "completion_tokens"), bounds):
        value = reported.get(name)
        if value is not None and (what := _impossible(name, value, bound)):
            return _usage(bounds, {}), f"the judge reported usage this request cannot have: {name} {value!r} {what}"
    return _usage(bounds, reported), None


def _impossible(name: str, value, bound: int | None) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "is not a count"
    if value < 0:
        return "is below zero"
    if bound is not None and value > bound:
        return f"is more than the {bound} " + ("this request can hold (raise image_tokens if the judge counts "
                                               "images higher)" if name == "prompt_tokens" else "max_tokens allows")
    return None


def _usage(bounds: tuple[int | None, int], counts: dict) -> dict:
    """`counts` with each missing count (and a prompt of 0) at its bound; an unknown bound counts 0."""
    prompt = counts.get("prompt_tokens") or bounds[0] or 0
    completion = counts.get("completion_tokens")
    completion = bounds[1] if completion is None else completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def oversized(text: str, max_tokens: int) -> str | None:
    """Why a reply's text is larger than max_tokens allows, or None."""
    size, limit = len(text.encode()), openai_api.max_reply_bytes(max_tokens)
    return f"the reply's text is {size} bytes, more than the {limit} its max_tokens allows" if size > limit else None


class Unreadable(Exception):
    """A 200 reply with no usable text in it."""


class OutOfBounds(Exception):
    """A reply past its request's bounds (usage it cannot have used, more bytes than max_tokens
    allows): the item's error, with the usage it was charged (the worst case)."""

    def __init__(self, problem: str, usage: dict):
        super().__init__(f"{problem} (charged the worst case)")
        self.usage = usage


class NotBatched(Deferred):
    """In batch mode, a first ask no batch has answered yet: it waits for the next batch, never goes online."""
    reason = "batch"


@dataclass
class Reply:
    text: str
    usage: dict
    cached: bool


class OpenAIJudge:
    """Rates items through a chat-completions API; see the module docstring for the order of things."""

    def __init__(self, config: JudgeConfig, cache: RequestCache | None = None):
        self.config, self.cache = config, cache
        self.prompt = Prompt.load(config.prompt, config.prompt_template)
        self.name, self.prompt_version = config.model, self.prompt.version
        self.ledger = SpendLedger(config.price, config.budget_usd)
        self.stats: Counter = Counter()  # requests, cache_hits, retries, reasks
        self.batched = False  # in batch mode first asks come only from the cache, which batches fill
        self._requests, self._tokens = Pacer(config.rpm), Pacer(config.tpm)  # per run, across event loops

    # ---- requests and their cache keys, shared with the batch path ----

    def conversations(self, item: Item) -> list[tuple[PromptRequest, list[dict]]]:
        """The first-ask conversation of each request an item needs."""
        return [(r, user_turn(r.text)) for r in self.prompt.requests(item.instruction["prompt"], item.responses)]

    def key(self, item: Item, request: PromptRequest, messages: list[dict]) -> str:
        # The messages hold the instruction, the responses in their shown order and the prompt text.
        return request_key(kind="judge", model=self.config.model, prompt_version=self.prompt_version,
                           image=item.instruction["image"], max_image_side=self.config.max_image_side,
                           messages=messages, params=dataclasses.asdict(self.config.generation),
                           response_format=request.schema)

    def body(self, request: PromptRequest, messages: list[dict], image_url: str) -> dict:
        body = {"model": self.config.model, "messages": openai_api.openai_messages(messages, image_url),
                **openai_api.sampling(self.config.generation)}
        if request.schema is not None:
            body["response_format"] = request.schema
        return body

    def worst_tokens(self, messages: list[dict]) -> tuple[int, int]:
        return estimate_tokens(messages, self.config.image_tokens, worst=True), self.config.generation.max_new_tokens

    # ---- --dry-run ----

    def estimate(self, items: Iterable[Item]) -> Counter:
        """What judging `items` would send and cost, from the cache and token estimates; sends nothing."""
        totals: Counter = Counter()
        price, discount = self.config.price, self.config.batch_discount if self.config.batch else 1.0
        for item in items:
            totals["items"] += 1
            for request, messages in self.conversations(item):
                if self.cache is not None and self.cache.get(self.key(item, request, messages)) is not None:
                    totals["cached"] += 1
                    continue
                prompt = estimate_tokens(messages, self.config.image_tokens)
                completion = TOKENS_PER_CELL * len(request.aspects) * len(item.responses)
                worst_prompt, worst_completion = self.worst_tokens(messages)
                totals["requests"] += 1
                totals["prompt_tokens"] += prompt
                totals["completion_tokens"] += completion
                if price:
                    totals["cost_usd"] += price.cost(prompt, completion) * discount
                    totals["worst_cost_usd"] += price.cost(worst_prompt, worst_completion) * discount
        return totals

    # ---- judging ----

    def judge(self, items: Iterable[Item]) -> Iterator[Verdict]:
        return drive(self._judge_all(items, api_key(self.config)))

    def client(self, secret: str):
        """An SDK client whose every HTTP attempt passes `_on_send` first, its replies bounded by max_tokens."""
        return openai_api.client(secret, self.config.base_url, self.config.timeout, self.config.max_retries,
                                 before_send=self._on_send,
                                 reply_bytes=openai_api.max_reply_bytes(self.config.generation.max_new_tokens))

    async def _on_send(self, request) -> None:
        """Runs before every HTTP attempt the SDK makes, its own retries included."""
        if request.url.path.endswith("/chat/completions"):
            # The SDK numbers its attempts in this header; a nonzero count is a retry.
            if request.headers.get("x-stainless-retry-count", "0") != "0":
                self.stats["retries"] += 1
            await self._requests.take()

    async def _judge_all(self, items: Iterable[Item], secret: str) -> AsyncIterator[Verdict]:
        self._limit = asyncio.Semaphore(self.config.concurrency)
        items, running = iter(items), set()
        async with self.client(secret) as client:
            try:
                while True:
                    # Pull items only as slots free up, so a long stream never piles up in memory.
                    while len(running) < 2 * self.config.concurrency and (item := next(items, None)) is not None:
                        running.add(asyncio.ensure_future(self._judge_one(client, item, secret)))
                    if not running:
                        return
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    stop = [task.exception() for task in done if task.exception()]  # retrieves them all
                    if stop:
                        raise stop[0]
                    for task in done:
                        yield task.result()
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    async def _judge_one(self, client, item: Item, secret: str) -> Verdict:
        import openai

        image = _Image(item, self.config.max_image_side)
        results = await asyncio.gather(*(self._rate(client, item, request, messages, image)
                                         for request, messages in self.conversations(item)), return_exceptions=True)
        verdict = Verdict(item.key, cached=not any(isinstance(r, BaseException) for r in results))
        ratings = [{} for _ in item.responses]
        for result in results:
            if isinstance(result, BaseException):
                error = one_line(result)
                if not isinstance(result, (InputError, OutOfBounds)):  # our own messages need no class name
                    error = openai_api.scrub(f"{type(result).__name__}: {error}", secret)
                status = getattr(result, "status_code", None)
                if isinstance(result, openai.APIStatusError) and (stop := openai_api.stop_error(error)):
                    raise stop
                if isinstance(result, OutOfBounds):
                    verdict.error = verdict.error or error[:300]
                    for name, value in result.usage.items():  # what it was charged belongs to the record
                        verdict.usage[name] = verdict.usage.get(name, 0) + value
                elif isinstance(result, Deferred):
                    verdict.deferred = result.reason
                elif isinstance(result, (openai.APIConnectionError, json.JSONDecodeError, Unreadable)) or (
                        isinstance(result, openai.APIStatusError) and (status in (408, 409, 429) or status >= 500)):
                    verdict.deferred = verdict.deferred or Deferred.reason
                elif isinstance(result, (openai.APIStatusError, InputError)):
                    verdict.error = verdict.error or error[:300]
                else:
                    raise result  # a bug, not a bad item
                continue
            parsed, usage, reasks, cached = result
            for name, value in usage.items():
                verdict.usage[name] = verdict.usage.get(name, 0) + value
            verdict.reasks += reasks
            verdict.cached &= cached
            for row, cells in zip(ratings, parsed.ratings):
                row.update(cells)
            if parsed.missing and verdict.error is None:
                verdict.error = f"unreadable judge reply after one re-ask: {parsed.problem}"
        verdict.ratings = ratings if all(ratings) else []
        return verdict

    async def _rate(self, client, item: Item, request: PromptRequest, messages: list[dict], image: _Image):
        """(parsed ratings, usage of the answers, re-asks, whether every answer was cached)."""
        reply = await self._ask(client, item, request, messages, image)
        usage = Counter(reply.usage)
        parsed = parse_reply(reply.text, len(item.responses), request.aspects)
        if not parsed.missing:
            return parsed, usage, 0, reply.cached
        self.stats["reasks"] += 1
        again = messages + [{"role": "assistant", "content": reply.text},
                            {"role": "user", "content": REASK.format(problem=parsed.problem)}]
        try:
            second = await self._ask(client, item, request, again, image)
        except OutOfBounds as error:
            error.usage = dict(usage + Counter(error.usage))  # the first answer was paid for too
            raise
        usage.update(second.usage)
        reparsed: Parsed = parse_reply(second.text, len(item.responses), request.aspects)
        best = reparsed if len(reparsed.missing) <= len(parsed.missing) else parsed
        return best, usage, 1, reply.cached and second.cached

    async def _ask(self, client, item: Item, request: PromptRequest, messages: list[dict], image: _Image) -> Reply:
        key = self.key(item, request, messages)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self.stats["cache_hits"] += 1
            return Reply(hit["text"], hit["usage"], cached=True)
        if self.batched and len(messages) == 1:
            raise NotBatched()
        async with self._limit:
            # Held inside the slot, so at most `concurrency` worst cases are held at once.
            held = self.ledger.reserve(*self.worst_tokens(messages))
            try:
                url = await image.url()
                tokens = estimate_tokens(messages, self.config.image_tokens) + self.config.generation.max_new_tokens
                await self._tokens.take(tokens)
                self.stats["requests"] += 1
                response = await client.chat.completions.create(**self.body(request, messages, url))
            except openai_api.ReplyTooLarge as error:
                usage, _ = checked_usage(None, self.worst_tokens(messages))
                usage["cost_usd"] = self.ledger.charge(held, usage)  # a reply came, so it is paid for
                raise OutOfBounds(f"the judge's reply is larger than max_tokens allows: {error}", usage) from None
            except BaseException:
                self.ledger.release(held)  # a request that failed costs nothing
                raise
            text, usage = self._read(response, held, messages)
            if self.cache is not None:
                # Stored before the slot frees, so a kill loses at most `concurrency` paid answers.
                # The put waits for the disk; a thread lets the other requests go on meanwhile.
                await asyncio.to_thread(self.cache.put, key, {"text": text, "usage": usage})
        return Reply(text, usage, cached=False)

    def _read(self, response, held: float, messages: list[dict]) -> tuple[str, dict]:
        """The reply's text and usage (with its cost, now charged); raises for an unusable reply."""
        problem = openai_api.body_problem(response)
        if problem:
            self.ledger.release(held)
            raise Unreadable(problem)
        # A server that reports no usage, or usage the request cannot have, is charged the worst
        # case, so the cap holds all the same. (getattr: the SDK does not validate the types.)
        reported = {name: getattr(response.usage, name, None) for name in openai_api.USAGE_FIELDS} \
            if response.usage else None
        usage, problem = checked_usage(reported, self.worst_tokens(messages))
        usage["cost_usd"] = self.ledger.charge(held, usage)
        if problem:
            raise OutOfBounds(problem, usage)
        if not response.choices:
            raise Unreadable("the response has no choices")
        message = response.choices[0].message
        if message.content is None:
            reason = getattr(message, "refusal", None) or f"finish_reason {response.choices[0].finish_reason!r}"
            raise InputError(f"the judge gave no text: {one_line(reason)[:200]}")
        if problem := oversized(message.content, self.config.generation.max_new_tokens):
            raise OutOfBounds(problem, usage)  # the client's bound on the body stops it first, online
        return message.content, usage


class _Image:
    """An item's image as a data URL, encoded once (in a thread: it is CPU work) and only if a request is sent."""

    def __init__(self, item: Item, max_side: int):
        self.path, self.max_side, self._task = item.image, max_side, None

    async def url(self) -> str:
        if self._task is None:
            encode = asyncio.to_thread(openai_api.file_data_url, self.path, self.max_side)
            self._task = asyncio.ensure_future(encode)
        return await self._task


def drive(stream: AsyncIterator) -> Iterator:
    """An async generator as a plain iterator, run on a private event loop between items."""
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                yield loop.run_until_complete(stream.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(stream.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
