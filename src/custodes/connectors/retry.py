"""Retrying one vendor call: transient failures back off exponentially, or wait what the vendor asked for.

A connector turns each failure of its client library into `Transient` (worth retrying, maybe with the
vendor's ``Retry-After``) or `SourceError` (a refusal that retrying will not fix). Messages name the call,
never a credential, a query string or a header value.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

log = logging.getLogger(__name__)
T = TypeVar("T")


class SourceError(Exception):
    """A vendor call failed for good: refused, or still failing after every retry."""


class Transient(Exception):
    """A vendor call failed in a way worth retrying; `delay` is the wait the vendor asked for, if any."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Total attempts per call, the longest single wait, and the first backoff step (seconds)."""

    attempts: int = 6
    max_wait: float = 60.0
    backoff: float = 0.5


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=policy.backoff, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, Transient) and error.delay is not None:
            return min(error.delay, policy.max_wait)
        return float(backoff(state))

    return wait


async def call(where: str, attempt: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """Await `attempt()` until it succeeds, retrying `Transient` failures under `policy`.

    Raises `SourceError` naming `where` once the attempts are spent; other exceptions pass through.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: %s (attempt %d of %d); retrying in %.2fs", where, error, state.attempt_number, policy.attempts, wait
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type(Transient),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(attempt)
    except Transient as error:
        raise SourceError(f"{where}: {error} (after {policy.attempts} attempts)") from None
