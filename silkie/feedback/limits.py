"""The provider's rate limits and the user's budget: what may be sent, when, and at what cost."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from silkie import InputError
from silkie.feedback.base import Deferred


class Pacer:
    """Spaces units (requests, or tokens) evenly at `per_minute`, first come first served.

    Even spacing never trips a provider's sliding-window limit, where a burst allowance could.
    Each caller books the next free slot before it sleeps, so waiters keep their order.
    """

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0

    async def take(self, amount: float = 1.0) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        start = max(self._next, now)
        self._next = start + amount * self.interval
        if start > now:
            await asyncio.sleep(start - now)


@dataclass
class Price:
    input: float  # USD per million prompt tokens
    output: float  # USD per million completion tokens

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


class BudgetReached(Deferred):
    """The next request could cost more than the budget has left; it was not sent."""
    reason = "budget"


class SpendLedger:
    """What the judge spent, from the token usage each reply reports, under a hard cap.

    Before a request is sent, its worst-case cost is held; the cap counts held money as spent, so
    requests in flight together can never cross it. The reply's real cost then replaces the hold.
    """

    def __init__(self, price: Price | None, budget_usd: float | None = None):
        if budget_usd is not None and price is None:
            raise InputError("a budget needs the judge model's price: add it to `prices` in the judge config")
        self.price, self.budget = price, budget_usd
        self.spent = self.held = 0.0
        self.prompt_tokens = self.completion_tokens = 0

    def reserve(self, prompt_tokens: int, completion_tokens: int, discount: float = 1.0) -> float:
        """Hold the most a request could cost, or raise BudgetReached."""
        worst = self.price.cost(prompt_tokens, completion_tokens) * discount if self.price else 0.0
        if self.budget is not None and self.spent + self.held + worst > self.budget:
            raise BudgetReached(f"budget of ${self.budget:.2f} reached")
        self.held += worst
        return worst

    def release(self, held: float) -> None:
        self.held -= held

    def charge(self, held: float, usage: dict, discount: float = 1.0) -> float:
        """Replace a hold by what the reply cost; returns that cost (0 when the model has no price).

        Counts below zero (or not numbers) count as zero: no report may credit the ledger. The
        judge checks usage against the request's bounds before it gets here (`checked_usage`).
        """
        self.held -= held
        prompt, completion = (_count(usage.get(name)) for name in ("prompt_tokens", "completion_tokens"))
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        cost = self.price.cost(prompt, completion) * discount if self.price else 0.0
        self.spent += cost
        return cost


def _count(value) -> float:
    """A reported token count as a number of at least zero."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return max(0, value) if ok else 0
