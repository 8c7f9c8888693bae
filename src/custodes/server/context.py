"""Typed application keys shared by the server's handlers."""

from __future__ import annotations

from aiohttp import web

from custodes.connectors.supervisor import ConnectorSupervisor
from custodes.server.ingest import IngestQueue
from custodes.server.metrics import Metrics
from custodes.server.tasks import BackgroundTasks
from custodes.services import Services

services_key = web.AppKey("services", Services)
tasks_key = web.AppKey("tasks", BackgroundTasks)
ingest_key = web.AppKey("ingest", IngestQueue)
metrics_key = web.AppKey("metrics", Metrics)
supervisor_key = web.AppKey("supervisor", ConnectorSupervisor)
"""Present when this process runs the configured connectors (`custodes serve`)."""
