"""The parts of a cluster, one at a time: its settings, the roles' start-up checks, the bus envelope, the partition
assignment, outbox claims, and (on the local RabbitMQ) a publisher's confirms, a refused subscription and a
receiver's routing."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractIncomingMessage
from typer.testing import CliRunner

from custodes.bus.assignment import owner, preferred
from custodes.bus.publisher import BusError, Publisher
from custodes.bus.receiving import PublishingPipeline
from custodes.bus.topology import queue_name
from custodes.bus.wire import BadMessage, Envelope, decode, encode
from custodes.cli import app
from custodes.config import DatabaseSettings, Settings, load_settings
from custodes.connectors.envelope import to_event
from custodes.detections.scoring import service as service_module
from custodes.errors import ConfigError
from custodes.model import Event, Finding, LogSource, Outcome, Severity
from custodes.services import Services
from custodes.sources import SourceSettings
from custodes.store import Store
from custodes.store.tables import outbox

runner = CliRunner()


def test_cluster_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "custodes.yaml"
    path.write_text("cluster:\n  amqp_url: env:AMQP\n  exchange: soc.events\n")
    settings = load_settings(path, environ={"AMQP": "amqp://u:p@mq:5672/", "CUSTODES_CLUSTER__PARTITIONS": "4"})
    cluster = settings.cluster
    assert (cluster.partitions, cluster.exchange) == (4, "soc.events")
    assert cluster.amqp_url is not None and cluster.amqp_url.reveal() == "amqp://u:p@mq:5672/"
    assert repr(cluster.amqp_url) == "Secret(env:AMQP)"
    assert load_settings(None, environ={}).cluster.partitions == 16


def test_bad_cluster_settings_are_located(tmp_path: Path) -> None:
    path = tmp_path / "custodes.yaml"
    path.write_text("cluster:\n  amqp_url: amqp://guest:guest@mq/\n  exchange: 'has space'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"CUSTODES_CLUSTER__PARTITIONS": "0"})
    text = "\n".join(str(problem) for problem in caught.value.problems)
    assert "custodes.yaml:2:13" in text and "reference" in text, text
    assert "cluster.exchange" in text and "environment CUSTODES_CLUSTER__PARTITIONS (cluster.partitions)" in text
    assert "guest:guest" not in text


def test_a_cluster_role_without_rabbitmq_or_postgresql_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "custodes.yaml"
    path.write_text(f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'x.db'}\n")
    result = runner.invoke(app, ["serve", "--config", str(path), "--role", "worker"])
    assert result.exit_code == 2
    assert "configuration (cluster.amqp_url): the worker role needs RabbitMQ" in result.stderr
    assert "configuration (database.url): the worker role needs PostgreSQL" in result.stderr
    wrong = runner.invoke(app, ["serve", "--config", str(path), "--role", "brain"])
    assert wrong.exit_code == 2 and "brain" in wrong.stderr


def test_an_envelope_survives_the_wire() -> None:
    when = datetime(2026, 11, 21, 22, 0, tzinfo=UTC)
    event = Event(
        "e1", when, "okta", LogSource("okta", "okta"), {"a": [1, {"b": None}]}, "alice", "login", None, Outcome.FAILURE
    )
    alert = Finding(
        "f1", "k", "splunk", "r", "Bulk download", Severity.HIGH, "alice", ["e1"], ["t"], when, when + timedelta(1)
    )
    assert decode(encode(Envelope(event, alert, "alerts"))) == Envelope(event, alert, "alerts")
    assert decode(encode(Envelope(event))) == Envelope(event)
    for body in (b"not json", b"{}", b'{"event": {"id": "x"}}'):
        with pytest.raises(BadMessage, match="not an event envelope"):
            decode(body)


def test_partitions_are_shared_and_only_a_leaver_s_move() -> None:
    three = ["a:1", "b:2", "c:3"]
    shares = Counter(owner(partition, three) for partition in range(64))
    assert set(shares) == set(three) and min(shares.values()) >= 10, shares
    two = ["a:1", "b:2"]
    moved = [p for p in range(64) if owner(p, three) != owner(p, two)]
    assert moved == [p for p in range(64) if owner(p, three) == "c:3"]
    order = preferred("b:2", three, 64)
    assert sorted(order) == list(range(64))
    assert {owner(p, three) for p in order[: shares["b:2"]]} == {"b:2"}


async def test_drains_claim_disjoint_outbox_rows(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.enqueue_starts(("play", f"finding-{n}") for n in range(30))
    lease = timedelta(seconds=30)

    async def claim() -> list[tuple[str, str, str | None]]:
        async with store.transaction() as tx:
            return await tx.claim_starts(10, lease)

    claimed = [row for rows in await asyncio.gather(*(claim() for _ in range(4))) for row in rows]
    assert sorted(subject for _, subject, _ in claimed) == sorted(f"finding-{n}" for n in range(30))
    async with store.transaction() as tx:
        assert await tx.claim_starts(10, lease) == [], "claimed rows wait for their lease to end"
        ended = datetime.now(UTC) - timedelta(seconds=1)
        await tx.conn.execute(sa.update(outbox).where(outbox.c.finding_id == "finding-1").values(claimed_until=ended))
    async with store.transaction() as tx:
        assert await tx.claim_starts(10, lease) == [("play", "finding-1", None)], "a dead drain's row is claimed again"


async def test_an_event_the_broker_does_not_take_is_an_error_not_an_acceptance() -> None:
    from aio_pika import Exchange

    from test_cluster import AMQP_URL

    exchange = f"custodes.test.{uuid.uuid4().hex[:10]}"
    publisher = await Publisher.open(AMQP_URL, exchange, 2)
    try:
        event = Event("e1", datetime.now(UTC), "okta", LogSource("okta", "okta"), {}, "alice")
        await publisher.publish([("alice", Envelope(event))])
        assert isinstance(publisher.exchange, Exchange)  # declared on the publisher's own channel
        for partition in range(2):
            await publisher.exchange.channel.queue_delete(queue_name(exchange, partition))
        with pytest.raises(BusError, match="1 of 1 events not confirmed"):
            await publisher.publish([("alice", Envelope(event))])
    finally:
        channel = await publisher.connection.channel()
        await channel.exchange_delete(exchange)
        await publisher.close()


async def test_a_subscription_the_broker_refuses_is_tried_until_it_takes(caplog: pytest.LogCaptureFixture) -> None:
    import aio_pika

    from custodes.bus.consumer import PartitionConsumer
    from test_cluster import AMQP_URL

    exchange = f"custodes.test.{uuid.uuid4().hex[:10]}"
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        admin = await connection.channel()
        # a classic queue where the partition's quorum queue goes: the broker refuses its declaration until it is gone
        await admin.declare_queue(queue_name(exchange, 0), durable=True)

        async def handle(partition: int, batch: object) -> None:
            return None

        consumer = PartitionConsumer(connection, exchange, 1, handle, batch=10)
        subscribing = asyncio.create_task(consumer.subscribe([0]))
        await asyncio.sleep(0.6)
        assert not subscribing.done() and consumer.unsubscribed() == [0]
        await admin.queue_delete(queue_name(exchange, 0))
        await asyncio.wait_for(subscribing, 10)
        assert consumer.unsubscribed() == []
        assert "partition 0: the broker refused the subscription (ChannelPreconditionFailed" in caplog.text
        await consumer.close()
        await admin.queue_delete(queue_name(exchange, 0))
    finally:
        await connection.close()


async def test_a_receiver_routes_a_person_s_events_by_the_directory_as_it_stands(
    database: DatabaseSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name the directory did not hold routes by itself; once a new export names its person, by the person, so
    their events meet in the partition of their other names without a receiver's restart."""
    from test_cluster import AMQP_URL

    monkeypatch.setattr(service_module, "DIRECTORY_REFRESH_SECONDS", 0.0)
    people = tmp_path / "people.json"
    people.write_bytes(orjson.dumps([{"id": "ann@corp.example"}]))
    settings = Settings.model_validate(
        {
            "database": database.model_dump(),
            "detection": {"rules": [str(tmp_path)]},
            "playbooks": {"paths": [str(tmp_path)]},
            "scoring": {"directory": str(people), "pseudonymise": False},
        }
    )
    exchange = f"custodes.test.{uuid.uuid4().hex[:10]}"
    services = await Services.open(settings)
    publisher = await Publisher.open(AMQP_URL, exchange, 2)
    try:
        pipeline = PublishingPipeline(services.pipeline, publisher)
        now = datetime.now(UTC)
        await pipeline.ingest([Event("e1", now, "okta", LogSource("okta", "okta"), {}, "jdoe")])
        export = tmp_path / "people.new"
        export.write_bytes(orjson.dumps([{"id": "ann@corp.example"}, {"id": "jane@corp.example", "aliases": ["jdoe"]}]))
        export.replace(people)
        await pipeline.ingest([Event("e2", now, "okta", LogSource("okta", "okta"), {}, "jdoe")])
        routed: list[tuple[str, str | None]] = []
        both = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            routed.append((decode(message.body).event.id, message.routing_key))
            await message.ack()
            if len(routed) == 2:
                both.set()

        channel = await publisher.connection.channel()
        for partition in range(2):
            await (await channel.get_queue(queue_name(exchange, partition))).consume(take)
        await asyncio.wait_for(both.wait(), 10)
        assert sorted(routed) == [("e1", "jdoe"), ("e2", "jane@corp.example")]
    finally:
        channel = await publisher.connection.channel()
        for partition in range(2):
            await channel.queue_delete(queue_name(exchange, partition))
        await channel.exchange_delete(exchange)
        await publisher.close()
        await services.close()


async def test_an_ecs_document_scored_as_its_vendors_record_routes_by_that_records_person(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    """Elastic names an assumed role's role in `user.name`; the envelope's actor, as scoring's, is its session, the
    person, whose other events must meet it in one partition."""
    from elastic_shapes import elastic_cloudtrail
    from test_cluster import AMQP_URL

    people = tmp_path / "people.json"
    people.write_bytes(orjson.dumps([{"id": "jane@corp.example", "aliases": ["jdoe"]}]))
    settings = Settings.model_validate(
        {
            "database": database.model_dump(),
            "detection": {"rules": [str(tmp_path)]},
            "playbooks": {"paths": [str(tmp_path)]},
            "scoring": {"directory": str(people), "pseudonymise": False},
        }
    )
    identity = {
        "type": "AssumedRole",
        "arn": "arn:aws:sts::123456789012:assumed-role/Dev/jdoe",
        "sessionContext": {"sessionIssuer": {"type": "Role", "userName": "Dev"}},
    }
    trail = {"eventName": "GetObject", "eventSource": "s3.amazonaws.com", "eventTime": "2024-03-04T10:00:00Z"}
    document = elastic_cloudtrail({**trail, "userIdentity": identity})
    logon = {"@timestamp": "2024-03-04T10:00:00Z", "event": {"category": ["authentication"]}, "user": {"name": "Dev"}}
    services = await Services.open(settings)
    publisher = await Publisher.open(AMQP_URL, f"custodes.test.{uuid.uuid4().hex[:10]}", 2)
    try:
        pipeline = PublishingPipeline(services.pipeline, publisher)
        generic = SourceSettings(format="generic")  # an Elasticsearch source's: ECS names
        assert document["user"]["name"] == "Dev"
        assert pipeline.entity_key(to_event(document, generic, "es")) == "jane@corp.example"
        assert pipeline.entity_key(to_event(logon, generic, "es")) == "dev"
    finally:
        await publisher.close()
        await services.close()
