"""One HTTP call for actions: retries on throttling, 5xx and broken connections; vendor errors as ActionError.

Waits honour ``Retry-After`` (seconds or an HTTP date) and, when throttled, Okta's ``X-Rate-Limit-Reset`` or
GitHub's ``X-RateLimit-Reset`` (epoch seconds), capped by the policy's ``max_wait``; otherwise they back off
exponentially with jitter. Error messages and logs name the method and host only: never a header value, a query
string or a path (a webhook URL's path is itself a secret). Connectors use the same `send`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential
from yarl import URL

from custodes.responder.registry import ActionError

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HTML = re.compile(r"<(!doctype\s+html|html)[\s>]", re.IGNORECASE)
"""An error body that is a web page (a proxy's, a sign-in portal's, a web server's), not the vendor API's."""
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
MAX_BODY_BYTES = 128 * 2**20
"""The largest response body read (decompressed): a vendor's page is a few megabytes; beyond this it is no API's
answer, and reading it whole could exhaust memory."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: total attempts, the longest single wait, and the first backoff step (seconds)."""

    attempts: int = 4
    max_wait: float = 30.0
    backoff: float = 0.5


retry_policy = RetryPolicy()
"""The policy `send` uses when none is given; tests and embedders may replace it."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A successful (2xx/3xx) response: status, headers, the decoded body, and how many attempts it took."""

    status: int
    headers: CIMultiDictProxy[str]
    data: Any
    attempts: int


class _Retryable(Exception):
    def __init__(self, status: int, code: str, message: str, delay: float | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.delay = delay


def retry_delay(status: int, headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the server asked us to wait before retrying, or None when it did not say."""
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        value = retry_after.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError):
            pass
    reset = headers.get("X-Rate-Limit-Reset") or headers.get("X-RateLimit-Reset")
    if throttled(status, headers) and reset is not None:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def throttled(status: int, headers: Mapping[str, str]) -> bool:
    """Whether a response is throttling: a 429, or GitHub's 403 with no requests left or a Retry-After."""
    if status == 429:
        return True
    if status != 403:
        return False
    remaining = headers.get("X-RateLimit-Remaining") or headers.get("X-Rate-Limit-Remaining")
    return remaining == "0" or "Retry-After" in headers


def _vendor_error(data: Any) -> tuple[str | None, str | None]:
    """The vendor's error code and message from an error body: Okta, OAuth/Graph/ServiceNow style, Jira
    (``errorMessages`` and per-field ``errors``; the code names the first bad field), or plain text."""
    if isinstance(data, dict):
        if isinstance(data.get("errorCode"), str):
            causes = [c.get("errorSummary") for c in data.get("errorCauses") or [] if isinstance(c, dict)]
            summary = "; ".join(str(part) for part in [data.get("errorSummary"), *causes] if part)
            return data["errorCode"], summary or None
        error = data.get("error")
        if isinstance(error, dict):
            message = "; ".join(str(part) for part in (error.get("message"), error.get("detail")) if part)
            return _text(error.get("code")), message or None
        messages, fields = data.get("errorMessages"), data.get("errors")
        if isinstance(messages, list) and isinstance(fields, dict):
            parts = [str(m) for m in messages] + [f"{name}: {text}" for name, text in sorted(fields.items())]
            first = min(fields, default=None)
            return (f"invalid_{first}" if first else None), "; ".join(parts) or None
        if isinstance(error, str):
            return error, _text(data.get("error_description") or data.get("message")) or error
    if isinstance(data, str) and data.strip():
        text = data.strip()
        if _HTML.match(text):
            title = _TITLE.search(text)
            named = f" titled {' '.join(title.group(1).split())[:120]!r}" if title else ""
            return None, f"an HTML page{named}, not an API's answer: is the address the vendor's API?"
        return (text if _TOKEN.fullmatch(text) else None), " ".join(text.split())[:300]
    return None, None


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


async def _body(response: aiohttp.ClientResponse, where: str) -> bytes:
    """The response's body, refused past `MAX_BODY_BYTES` (whether its length is declared or not)."""
    chunks: list[bytes] = []
    size = declared = response.content_length or 0  # a declared length past the bound is refused unread
    if declared <= MAX_BODY_BYTES:
        size = 0
        async for chunk in response.content.iter_chunked(2**20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                break
    if size <= MAX_BODY_BYTES:
        return b"".join(chunks)
    raise ActionError(
        f"{where}: HTTP {response.status}: the answer is larger than {MAX_BODY_BYTES // 2**20} MiB, more than an "
        "API's page; not read (is the address the vendor's API?)",
        code="response_too_large",
    )


def _decode(raw: bytes, content_type: str) -> Any:
    """The body as JSON when it says it is JSON, else as text; ValueError when its JSON is broken."""
    if not raw:
        return None
    if "json" in content_type:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ValueError("the response is not valid JSON") from None
    return raw.decode("utf-8", errors="replace")


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=policy.backoff, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _Retryable) and error.delay is not None:
            return min(error.delay, policy.max_wait)
        return float(backoff(state))

    return wait


def _log_retry(where: str, policy: RetryPolicy) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        reason = f"HTTP {error.status}" if isinstance(error, _Retryable) else type(error).__name__
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "%s: %s on attempt %d of %d; retrying in %.2fs",
            where,
            reason,
            state.attempt_number,
            policy.attempts,
            wait,
        )

    return before_sleep


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json: Any = None,
    timeout_seconds: float = 10.0,
    policy: RetryPolicy | None = None,
) -> HttpResponse:
    """Send one request (`json` as the body when given), retrying transient failures under `policy`.

    Returns the response when the final status is below 400; raises ActionError otherwise: with the
    vendor's error code and message for a 4xx, and ``retryable=True`` once throttling, 5xx or connection
    failures outlast the attempts.
    """
    policy = policy or retry_policy
    try:
        target = URL(url)
    except ValueError:
        raise ActionError(f"{method.upper()}: invalid URL", code="invalid_argument") from None
    place = target.host_port_subcomponent  # the port when the URL names one; no credentials, path or query
    where = f"{method.upper()} {target.scheme}://{place}" if target.host else f"{method.upper()} <no host>"
    body = orjson.dumps(json) if json is not None else None
    request_headers = {"Accept": "application/json", **(headers or {})}
    if body is not None:
        request_headers.setdefault("Content-Type", "application/json")
    attempts = 0

    async def attempt() -> HttpResponse:
        nonlocal attempts
        attempts += 1
        async with session.request(
            method,
            target,
            headers=request_headers,
            data=body,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        ) as response:
            raw = await _body(response, where)
        try:
            data = _decode(raw, response.content_type)
        except ValueError as error:
            if response.status < 400:
                raise ActionError(f"{where}: HTTP {response.status}: {error}", code="invalid_response") from None
            data = raw.decode("utf-8", errors="replace")
        if throttled(response.status, response.headers) or response.status >= 500:
            code, message = _vendor_error(data)
            delay = retry_delay(response.status, response.headers, now=time.time())
            raise _Retryable(
                response.status, code or f"http_{response.status}", message or response.reason or "", delay
            )
        if response.status >= 400:
            code, message = _vendor_error(data)
            detail = message or response.reason or "request refused"
            raise ActionError(f"{where}: HTTP {response.status}: {detail}", code=code or f"http_{response.status}")
        return HttpResponse(response.status, response.headers, data, attempts)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type((_Retryable, *_TRANSIENT)),
        before_sleep=_log_retry(where, policy),
        reraise=True,
    )
    try:
        return await retrying(attempt)
    except _Retryable as error:
        raise ActionError(
            f"{where}: HTTP {error.status} after {attempts} attempts: {error}",
            code=error.code,
            retryable=True,
        ) from None
    except _TRANSIENT as error:
        raise ActionError(
            f"{where}: {type(error).__name__} after {attempts} attempts",
            code="connection_error",
            retryable=True,
        ) from None
    except aiohttp.ClientError as error:
        raise ActionError(f"{where}: {type(error).__name__}", code="request_error") from None
