"""HTTP for pull connectors: the responder's `send` (tenacity retries honouring Retry-After and vendor
rate-limit headers), plus a pause when a vendor says no requests are left, a client-side request-rate limit,
and `Link` header parsing."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp
from yarl import URL

from custodes.responder.http import HttpResponse, RetryPolicy, send

_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^";,]+)"?')


class RateLimiter:
    """At most `limit` requests in any `window` seconds, shared by whoever holds it.

    A request holds its slot from before it is sent until its answer (retries included) and counts from its
    answer, so the server never sees more than `limit` final attempts in a window however late they arrive.
    """

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._slots: list[list[float]] = []
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait until one more request fits the window; count it from the end of the block."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._slots = [s for s in self._slots if now - s[0] < self.window]
                if len(self._slots) < self.limit:
                    mine = [math.inf]
                    self._slots.append(mine)
                    break
                oldest = min(s[0] for s in self._slots)
                await asyncio.sleep(max(0.001, self.window - (now - oldest)) if oldest != math.inf else 0.01)
        try:
            yield
        finally:
            mine[0] = time.monotonic()


def links(headers: Mapping[str, str]) -> dict[str, str]:
    """The `Link` header's targets by rel, whether sent as one header per rel or comma-joined."""
    values: list[str] = []
    getall = getattr(headers, "getall", None)
    if callable(getall):
        values = list(getall("Link", []))
    elif "Link" in headers:
        values = [str(headers["Link"])]
    found: dict[str, str] = {}
    for value in values:
        for target, rel in _LINK.findall(value):
            try:
                URL(target)
            except ValueError as exc:  # followed later, it would fail there as a bare "Invalid IPv6 URL"
                raise ValueError(f"the response's Link header names a malformed URL ({exc}): {target!r}") from None
            for name in rel.split():
                found.setdefault(name, target)
    return found


def next_page(page: str, target: str) -> str:
    """A pagination link (`Link: rel="next"`, `@odata.nextLink`) resolved against the page it came with; refused
    when it leaves the API's origin (scheme, host and port), since the request to it carries the connector's
    credentials."""
    try:
        here = URL(page)
        there = here.join(URL(target))
    except ValueError as exc:
        raise ValueError(f"the next page's link is a malformed URL ({exc}): {target!r}") from None
    if there.origin() != here.origin():
        raise ValueError(
            f"the next page's link leads to {there.origin()}, away from the API at {here.origin()}: not followed, "
            "since the request would carry the connector's credentials there"
        )
    return str(there)


class PageTrail:
    """The pages one listing has read: a next link back to any of them is a loop in the vendor's pagination, refused
    rather than followed for ever."""

    def __init__(self, first: str) -> None:
        self.read = {first}

    def again(self, page: str) -> bool:
        """Whether `page` is one this listing has read; it counts as read from now on."""
        if page in self.read:
            return True
        self.read.add(page)
        return False

    def follow(self, page: str, target: str) -> str:
        """`next_page(page, target)`, refused when it is a page this listing has already read."""
        url = next_page(page, target)
        if self.again(url):
            raise ValueError(
                f"the next page's link returns to a page already read ({URL(url).path}, after {len(self.read)} "
                "pages): the API's pagination loops; not followed"
            )
        return url


def exhausted_wait(headers: Mapping[str, str], *, now: float, cap: float) -> float:
    """Seconds to pause when a response says no requests are left in the window (Okta, GitHub), else 0."""
    remaining = headers.get("X-Rate-Limit-Remaining") or headers.get("X-RateLimit-Remaining")
    reset = headers.get("X-Rate-Limit-Reset") or headers.get("X-RateLimit-Reset")
    if remaining != "0" or reset is None:
        return 0.0
    try:
        return min(cap, max(0.0, float(reset) - now))
    except ValueError:
        return 0.0


async def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    policy: RetryPolicy,
    timeout_seconds: float,
    limiter: RateLimiter | None = None,
) -> HttpResponse:
    """GET with retries; waits for `limiter` first and, after the response, for an exhausted rate limit.

    Raises `ActionError` (its message names the method and host only) when the request finally fails.
    """
    async with limiter.slot() if limiter is not None else contextlib.nullcontext():
        response = await send(session, "GET", url, headers=headers, timeout_seconds=timeout_seconds, policy=policy)
    pause = exhausted_wait(response.headers, now=time.time(), cap=policy.max_wait)
    if pause > 0:
        await asyncio.sleep(pause)
    return response
