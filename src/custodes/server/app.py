"""The aiohttp application: health, the REST API, webhook receivers and the console."""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from custodes import logs
from custodes.connectors.supervisor import ConnectorSupervisor
from custodes.server import api, console, endpoints, webhooks
from custodes.server.connections import ConnectionLimits, limits_key
from custodes.server.context import ingest_key, metrics_key, services_key, supervisor_key, tasks_key
from custodes.server.health import healthz, store_unready
from custodes.server.ingest import IngestQueue
from custodes.server.metrics import CONTENT_TYPE_LATEST, ConnectorCollector, DirectoryCollector, Metrics
from custodes.server.responses import error, json_response
from custodes.server.tasks import BackgroundTasks
from custodes.services import Services
from custodes.store.text import NUL

log = logging.getLogger(__name__)

REQUEST_IDS = (f"{secrets.token_hex(8)}{n:08x}" for n in itertools.count())
"""Request ids: this process's random prefix and a counter (unique without a system call per request)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_REQUEST_LINE = 65_536
"""Room for every bounded query parameter even when percent-encoded, so that refusals come from validation (JSON)
rather than from the HTTP parser."""


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tag each request with an id (logs and the X-Request-Id header), count and time it by route, turn HTTP errors
    into JSON and unexpected ones into a logged 500 that names the request id, and tell the connection's guard when
    the request's headers are in and when it is done (`connections`)."""
    request_id = request.headers.get("X-Request-Id") or next(REQUEST_IDS)
    token = logs.request_id.set(request_id)
    started = time.perf_counter()
    connection = request.app[limits_key].request_started(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        kept = {name: value for name, value in exc.headers.items() if name.lower() in {"allow", "retry-after"}}
        response = error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason, headers=kept)
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and (request.transport is None or request.transport.is_closing()):
            return web.Response(status=408)  # the connection was closed (a body too slow): nobody to answer
        log.exception("request failed", extra={"method": request.method, "path": request.path})
        response = error(500, "internal_error", f"internal error; quote request id {request_id}")
    finally:
        logs.request_id.reset(token)
        if connection is not None:
            connection.request_finished()
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    metrics = request.app[metrics_key]
    metrics.child(metrics.http_requests, route, str(response.status)).inc()
    metrics.child(metrics.http_duration, route).observe(time.perf_counter() - started)
    if response.status >= 400:
        log.info(
            "request refused",
            extra={"method": request.method, "path": request.path, "status": response.status, "request_id": request_id},
        )
    response.headers["X-Request-Id"] = request_id
    return response


@web.middleware
async def refuse_nul(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a query parameter or path segment holding a NUL character (400 naming it): no store keeps one
    (PostgreSQL fails the statement), and no identifier or filter has one."""
    for name, value in [*request.query.items(), *request.match_info.items()]:
        if NUL in name or NUL in value:
            return error(400, "invalid_parameter", f"{name!r} holds a NUL character", field=name.replace(NUL, ""))
    return await handler(request)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the store answers and the webhook writer runs."""
    if not request.app[ingest_key].running:
        return error(503, "not_ready", "the webhook writer is not running")
    reason = await store_unready(request.app[services_key].store)
    if reason is not None:
        return error(503, "not_ready", reason)
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics in the text exposition format."""
    registry = request.app[metrics_key]
    registry.queue_depth.set(request.app[ingest_key].depth)
    status = request.app[services_key].pipeline.event_time()
    for source, count in status["out_of_window"].items():
        registry.out_of_window.labels(source).set(count)
    for stage, counts in status["late"].items():
        for source, count in counts.items():
            registry.late.labels(stage, source).set(count)
    registry.held.clear()
    for source, count in status["hold"]["held"].items():
        registry.held.labels(source).set(count)
    for source, count in status["hold"]["released_past_bound"].items():
        registry.past_bound.labels(source).set(count)
    for playbook, count in request.app[services_key].pipeline.start_cap.held.items():
        registry.starts_held.labels(playbook).set(count)
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(services: Services, supervisor: ConnectorSupervisor | None = None) -> web.Application:
    """The application for already-opened services (the caller closes them); with the `supervisor` of the
    connectors this process runs, their start, stop and metrics."""
    limits = ConnectionLimits(services.settings.server)
    app = web.Application(
        middlewares=[observe, refuse_nul],
        client_max_size=services.settings.server.max_body_bytes,
        handler_args={"max_line_size": MAX_REQUEST_LINE, "max_field_size": MAX_REQUEST_LINE},
    )
    app[services_key] = services
    app[limits_key] = limits
    tasks = BackgroundTasks()
    app[tasks_key] = tasks
    registry = Metrics()
    registry.registry.register(DirectoryCollector(services))
    app[metrics_key] = registry
    if supervisor is not None:
        app[supervisor_key] = supervisor
        registry.registry.register(ConnectorCollector(supervisor))
    queue = IngestQueue(services.pipeline, tasks, services.settings.server, registry)
    app[ingest_key] = queue

    async def start(_app: web.Application) -> None:
        queue.start()

    async def stop(_app: web.Application) -> None:
        await queue.stop()
        await tasks.drain()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/openapi.json", api.meta.openapi_document)
    endpoints.register(app)
    app.router.add_post("/webhooks/{name}", webhooks.receive)
    app.router.add_get("/webhooks/{name}", webhooks.verify)
    console.register(app, services)
    return app
