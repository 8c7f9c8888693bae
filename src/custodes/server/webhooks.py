"""Webhook endpoints: POST /webhooks/<name> for every configured receiver, GET for Okta's verification.

A 202 is returned only after the request's records (and the findings they raise) are committed; a full
queue answers 429 with Retry-After; bad bodies get a 4xx that says what is wrong and where.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiohttp import web

from custodes.bus.publisher import BusError
from custodes.config import ReceiverSettings
from custodes.connectors.envelope import FieldError, strict_fields, to_event
from custodes.errors import ConfigError
from custodes.model import Event, Finding
from custodes.server.auth import AuthError, authenticate
from custodes.server.context import ingest_key, metrics_key, services_key
from custodes.server.ingest import QueueFull, Unstorable
from custodes.server.limits import json_depth_exceeds
from custodes.server.receivers import generic, graph, kibana, okta_hook, splunk
from custodes.server.receivers.base import BadDelivery, Delivery, alert_records
from custodes.server.responses import error, json_response
from custodes.services import Services

log = logging.getLogger(__name__)

MAX_VALIDATION_TOKEN = 1024


def _receiver(request: web.Request) -> tuple[str, ReceiverSettings] | web.Response:
    name = request.match_info["name"]
    receiver = request.app[services_key].settings.webhooks.get(name)
    if receiver is None:
        return error(404, "unknown_receiver", f"no webhook receiver named {name!r} is configured")
    return name, receiver


def _parse(receiver: ReceiverSettings, body: Any) -> Delivery:
    if receiver.kind == "splunk":
        return splunk.parse(body, tuple(receiver.entity_fields) or splunk.ENTITY_FIELDS)
    if receiver.kind == "kibana":
        return kibana.parse(body)
    if receiver.kind == "okta_event_hook":
        return okta_hook.parse(body, receiver.record_source or "okta")
    if receiver.kind == "graph":
        return graph.parse(body, receiver.auth.secret.reveal(), receiver.record_source or "graph")
    return generic.parse(body, source=receiver.source, root=receiver.root, alert_fields=receiver.alert_fields)


def _records(
    services: Services, name: str, receiver: ReceiverSettings, delivery: Delivery
) -> tuple[list[Event], list[Finding]]:
    events: list[Event] = []
    alerts: list[Finding] = []
    for alert in delivery.alerts:
        event, finding = alert_records(alert, name, receiver.kind)
        events.append(event)
        alerts.append(finding)
    if delivery.records:
        if delivery.source is None:
            raise BadDelivery("missing_source", f"receiver {name!r} has no source for its records; set its source")
        try:
            source = services.settings.source(delivery.source)
        except ConfigError as exc:
            raise BadDelivery("unknown_source", exc.problems[0].message) from None
        with strict_fields():
            for index, record in enumerate(delivery.records):
                try:
                    events.append(to_event(record, source, delivery.source))
                except FieldError as exc:
                    path = f"{delivery.records_at}[{index}].{exc.field}"
                    raise BadDelivery("invalid_record", f"{path}: {str(exc).partition(': ')[2]}", path) from None
    return events, alerts


async def receive(request: web.Request) -> web.Response:
    """POST /webhooks/<name>."""
    started = time.perf_counter()
    found = _receiver(request)
    if isinstance(found, web.Response):
        return found
    name, receiver = found
    services = request.app[services_key]
    token = request.query.get("validationToken")
    if receiver.kind == "graph" and token is not None:
        if not token or len(token) > MAX_VALIDATION_TOKEN:
            return error(400, "invalid_validation_token", "validationToken must be 1 to 1024 characters")
        return web.Response(text=token, content_type="text/plain")
    if request.content_type != "application/json":
        return error(415, "unsupported_media_type", "send the body as application/json")
    limit = services.settings.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return error(413, "body_too_large", f"body is larger than the {limit}-byte limit")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return error(413, "body_too_large", f"body is larger than the {limit}-byte limit")
    try:
        authenticate(receiver.auth, request.headers, request.query, request.remote, body, now=time.time())
    except AuthError as exc:
        return error(401, "unauthorized", str(exc))
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return error(400, "invalid_json", f"invalid JSON at byte {exc.pos}: {exc.msg}")
    depth = services.settings.server.max_json_depth
    if json_depth_exceeds(body, document, depth):
        return error(400, "too_deep", f"JSON nests deeper than {depth} levels")
    try:
        events, alerts = _records(services, name, receiver, _parse(receiver, document))
    except BadDelivery as exc:
        return error(400, exc.code, str(exc), field=exc.field)
    except PermissionError as exc:
        return error(401, "unauthorized", str(exc))
    metrics = request.app[metrics_key]
    try:
        accepted = await request.app[ingest_key].submit(events, alerts, receiver=name)
    except QueueFull:
        metrics.child(metrics.refused, name).inc()
        return error(
            429, "queue_full", "too many records waiting to be stored; retry shortly", headers={"Retry-After": "1"}
        )
    except Unstorable as exc:
        return error(422, "unstorable_record", str(exc))
    except BusError as exc:
        log.warning("webhook %s: %s", name, exc)
        return error(
            503, "bus_unavailable", "the event bus did not confirm the records; retry", headers={"Retry-After": "1"}
        )
    metrics.child(metrics.ingested, name, "stored").inc(accepted.stored)
    metrics.child(metrics.ingested, name, "duplicate").inc(accepted.duplicates)
    metrics.commit_latency.observe(time.perf_counter() - started)
    return json_response(
        {
            "accepted": len(events),
            "stored": accepted.stored,
            "duplicates": accepted.duplicates,
            "findings": accepted.findings,
            "event_ids": [event.id for event in events],
        },
        status=202,
    )


async def verify(request: web.Request) -> web.Response:
    """GET /webhooks/<name>: Okta's one-time event hook verification (authenticated like deliveries)."""
    found = _receiver(request)
    if isinstance(found, web.Response):
        return found
    _, receiver = found
    if receiver.kind != "okta_event_hook":
        return error(405, "method_not_allowed", "this receiver only accepts POST")
    challenge = request.headers.get(okta_hook.VERIFICATION_HEADER)
    if not challenge:
        return error(400, "missing_challenge", f"missing {okta_hook.VERIFICATION_HEADER} header")
    try:
        authenticate(receiver.auth, request.headers, request.query, request.remote, b"", now=time.time())
    except AuthError as exc:
        return error(401, "unauthorized", str(exc))
    return json_response(okta_hook.verification(challenge))
