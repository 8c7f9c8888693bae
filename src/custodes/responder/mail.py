"""Email notification over SMTP: the standard library's smtplib, in a worker thread.

The relay is configured once (``responder.smtp``; the password is a secret reference). Each message carries a
``Message-ID`` derived from the step's idempotency key, so a replayed step's copy is recognisably the same
message (mail clients and archives collapse it). SMTP cannot be asked whether a message was already sent, so
this action does not report "no change". Transient replies (4xx) and broken connections are retried with
backoff; permanent ones (5xx) are reported with the server's reply code and text.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from custodes.config import SmtpConnection
from custodes.model import utcnow
from custodes.responder import http
from custodes.responder.registry import ActionContext, ActionError, action


def _address(value: str) -> str:
    text = value.strip()
    if "\r" in text or "\n" in text:
        raise ActionError("an email address cannot contain a line break", code="invalid_argument")
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain:
        raise ActionError(f"{text!r} is not an email address", code="invalid_argument")
    try:
        return str(Address(addr_spec=text))
    except (ValueError, IndexError):
        raise ActionError(f"{text!r} is not an email address", code="invalid_argument") from None


def build_message(sender: str, to: list[str], subject: str, body: str, idempotency_key: str) -> EmailMessage:
    """The message: one text part, a Message-ID from the idempotency key."""
    if "\r" in subject or "\n" in subject:
        raise ActionError("the subject cannot contain a line break", code="invalid_argument")
    message = EmailMessage()
    message["From"] = _address(sender)
    message["To"] = ", ".join(_address(a) for a in to)
    message["Subject"] = subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = f"<{idempotency_key}@custodes>"
    message.set_content(body)
    return message


def _reply(error: smtplib.SMTPResponseException) -> str:
    text = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
    return " ".join(text.split())[:300]


def _submit(relay: SmtpConnection, message: EmailMessage, timeout: float) -> dict[str, Any]:
    """One SMTP session: EHLO, STARTTLS when offered (and wanted), AUTH when configured, the message."""
    where = f"SMTP {relay.host}:{relay.port}"
    try:
        with smtplib.SMTP(relay.host, relay.port, timeout=timeout) as client:
            client.ehlo()
            tls = False
            if relay.starttls and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
                tls = True
            if relay.username is not None and relay.password is not None:
                client.login(relay.username, relay.password.reveal())
            refused = client.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        codes = {rcpt: code for rcpt, (code, _) in error.recipients.items()}
        transient = all(400 <= code < 500 for code in codes.values())
        detail = ", ".join(f"{rcpt} ({code})" for rcpt, code in sorted(codes.items()))
        first = min(codes.values()) if codes else 550
        raise ActionError(
            f"{where}: every recipient was refused: {detail}", code=f"smtp_{first}", retryable=transient
        ) from None
    except smtplib.SMTPResponseException as error:
        raise ActionError(
            f"{where}: {error.smtp_code} {_reply(error)}",
            code=f"smtp_{error.smtp_code}",
            retryable=400 <= error.smtp_code < 500,
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise ActionError(f"{where}: the server does not support AUTH", code="smtp_auth_unsupported") from None
    except (smtplib.SMTPException, OSError) as error:
        raise ActionError(f"{where}: {type(error).__name__}", code="connection_error", retryable=True) from None
    return {"refused": sorted(refused), "tls": tls}


@action("notify.email", plan="email {subject!r} to {to}")
async def email(ctx: ActionContext, *, to: list[str], subject: str, body: str) -> dict[str, Any]:
    """Send a plain-text email through the configured SMTP relay (``responder.smtp``) to `to`."""
    relay = ctx.settings.smtp
    if relay is None:
        raise ActionError(
            "no SMTP relay is configured: set responder.smtp (host, port, sender) in the settings",
            code="not_configured",
        )
    if not to:
        raise ActionError("notify.email needs at least one recipient", code="invalid_argument")
    message = build_message(relay.sender, to, subject, body, ctx.idempotency_key)
    if ctx.dry_run:
        return {"delivered": False, "dry_run": True, "would": f"email {subject!r} to {', '.join(to)}"}
    policy = http.retry_policy
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_random_exponential(multiplier=policy.backoff, max=policy.max_wait),
        retry=retry_if_exception(lambda error: isinstance(error, ActionError) and error.retryable),
        reraise=True,
    )
    timeout = ctx.settings.http_timeout_seconds
    outcome: dict[str, Any] = await retrying(asyncio.to_thread, _submit, relay, message, timeout)
    accepted = [a for a in message["To"].split(", ") if a not in outcome["refused"]]
    return {
        "delivered": True,
        "message_id": message["Message-ID"],
        "accepted": accepted,
        "refused": outcome["refused"],
        "tls": outcome["tls"],
    }
