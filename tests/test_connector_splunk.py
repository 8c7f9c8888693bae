"""The Splunk connector with splunk-sdk over loopback HTTP against the simulator."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from connector_support import FAST, poll, services, stored_raw
from custodes.connectors import splunk
from custodes.connectors.retry import SourceError
from custodes.connectors.runtime import ConnectorRuntime
from custodes.sandbox import splunk as sim
from custodes.sandbox.pathfaults import Fault
from custodes.sandbox.server import running
from custodes.services import Services
from custodes.sources import SourceSettings
from custodes.store.tables import events

__all__ = ["services"]

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=30)
SOURCE = SourceSettings(format="generic", product="custodes", service="splunk")
EXPORT = "/services/search/v2/jobs/export"
PASSWORD = "sandbox-password"

Splunk = tuple[sim.SplunkState, str]


@pytest.fixture
async def splunkd() -> AsyncIterator[Splunk]:
    """The simulator with 40 events one every 20 s from T0, half of them logins; and its URL."""
    state = sim.SplunkState()
    for n in range(40):
        action = "login" if n % 2 == 0 else "logout"
        raw = orjson.dumps(
            {"@timestamp": (T0 + timedelta(seconds=20 * n)).isoformat(), "n": n, "event": {"action": action}}
        ).decode()
        state.index(T0 + timedelta(seconds=20 * n), raw, index="auth", action=action)
    async with running(sim.create_app(state)) as url:
        yield state, url


def connector(
    url: str, password: str = PASSWORD, source: SourceSettings = SOURCE, name: str = "splunk", **options: Any
) -> splunk.SplunkConnector:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    opts = {
        "host": host,
        "port": int(port),
        "scheme": "http",
        "search": "search index=auth action=login",
        "window_seconds": 120,
        "overlap_seconds": 60,
        "settle_seconds": 0,
        "start": T0,
        "timeout_seconds": 0.5,
        **options,
    }
    built = splunk.build(name, name, source, opts, {"username": "admin", "password": password})
    built.policy = FAST
    built.clock = lambda: NOW
    return built


def numbers(raws: list[dict[str, Any]]) -> list[int]:
    return sorted(raw["n"] for raw in raws)


async def test_windows_commit_in_time_order_and_resume_without_repeats(splunkd: Splunk, services: Services) -> None:
    state, url = splunkd
    assert await poll(services, connector(url)) == 20
    exports = [form for _method, path, form in state.requests if path == EXPORT]
    assert len(exports) == 16, "a 60 s overlap before T0 then 15 windows of 120 s up to T0 + 30 min"
    assert numbers(await stored_raw(services, "splunk")) == list(range(0, 40, 2))
    late = T0 + timedelta(minutes=29, seconds=30)
    state.index(late, orjson.dumps({"@timestamp": late.isoformat(), "n": 100}).decode(), index="auth", action="login")
    assert await poll(services, connector(url)) == 1
    async with services.store.transaction() as tx:
        checkpoint = await tx.get_checkpoint("splunk")
    assert checkpoint is not None and checkpoint["cursor"] == "2024-03-01T12:30:00.000Z"


async def test_faults_neither_lose_nor_duplicate_events(splunkd: Splunk, services: Services) -> None:
    state, url = splunkd
    state.faults.add(Fault(status=503, retry_after=0.05, path=EXPORT))
    state.faults.add(Fault(status=429, retry_after=0.05, path=EXPORT))
    state.faults.add(Fault(status=500, path=EXPORT))
    state.faults.add(Fault(drop=True, path=EXPORT))
    state.faults.add(Fault(delay=1.0, path=EXPORT))
    state.truncate_exports = 2
    state.duplicate_exports = 3
    runtime = ConnectorRuntime(services.pipeline)
    report = await runtime.poll(connector(url), kind="splunk")
    assert report.stored == 20 and report.duplicates == 0
    assert numbers(await stored_raw(services, "splunk")) == list(range(0, 40, 2))
    assert state.faults.pending == [] and state.truncate_exports == 0 and state.duplicate_exports == 0
    status = await runtime.status("splunk")
    assert status is not None and status.events_total == 20 and status.last_error is None


async def test_expired_sessions_log_in_again_and_a_refused_login_is_an_error(
    splunkd: Splunk, services: Services
) -> None:
    state, url = splunkd
    es = connector(url, timeout_seconds=30)  # a search timed out on a loaded machine logs in again: counted below
    state.index(T0, '{"n": 200}', index="auth", action="login")
    assert await poll(services, es) == 21
    state.expire_sessions()
    state.index(NOW, '{"n": 201}', index="auth", action="login")
    es.clock = lambda: NOW + timedelta(minutes=1)
    assert await poll(services, es) == 1
    logins = [path for _method, path, _form in state.requests if path == "/services/auth/login"]
    assert len(logins) == 2
    refusing = connector(url, password="wrong-password-x")
    refusing.clock = lambda: NOW + timedelta(minutes=10)
    with pytest.raises(SourceError, match="login refused") as refused:
        await poll(services, refusing)
    assert "wrong-password-x" not in str(refused.value)
    assert all(form.get("password") in (None, "<redacted>") for _m, _p, form in state.requests)


async def test_backfill_reads_a_range_once(splunkd: Splunk, services: Services) -> None:
    _state, url = splunkd
    runtime = ConnectorRuntime(services.pipeline)
    es = connector(url)
    report = await runtime.backfill(es, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10))
    assert report.stored == 7, "logins at 300 s to 580 s: [start, end) excludes the end"
    assert numbers(await stored_raw(services, "splunk")) == list(range(16, 30, 2))[:8] or report.stored == 8
    assert (await runtime.backfill(es, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10))).received == 0


async def test_a_window_with_more_results_than_its_bound_is_read_in_halves(splunkd: Splunk, services: Services) -> None:
    """A busy window was held whole in memory, however many results; now `max_window_results` bounds it."""
    state, url = splunkd
    burst = T0 + timedelta(minutes=10, milliseconds=500)  # more logins in one millisecond than the bound
    for n in range(300, 312):
        state.index(burst, orjson.dumps({"n": n}).decode(), index="auth", action="login")
    assert await poll(services, connector(url, max_window_results=4)) == 32
    assert numbers(await stored_raw(services, "splunk")) == [*range(0, 40, 2), *range(300, 312)]
    windows = [
        (float(form["earliest_time"]), float(form["latest_time"]))
        for _method, path, form in state.requests
        if path == EXPORT
    ]
    spans = [round(high - low, 3) for low, high in windows]
    assert 120.0 in spans[spans.index(0.001) :], "halved down to the burst's millisecond, then grown back"
    assert windows[0][0] == (T0 - timedelta(seconds=60)).timestamp() and windows[-1][1] == NOW.timestamp()
    kept: list[tuple[float, float]] = []
    for low, high in windows:  # a window read whole follows the last one read whole; a halved one is read again
        while kept and kept[-1][0] == low:
            kept.pop()
        kept.append((low, high))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(kept)), "the windows read whole leave no gap"


async def test_sudo_sshd_and_auditd_lines_in_raw_are_read_as_the_file_tail_reads_them(services: Services) -> None:
    state = sim.SplunkState()
    lines = [
        "Mar  1 13:00:10 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/cat /etc/shadow",
        "Mar  1 13:00:20 web1 sudo:      bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; "
        "COMMAND=/bin/sh",
        "Mar  1 13:00:30 web1 sshd[812]: Accepted publickey for carol from 10.0.0.5 port 5122 ssh2",
        "Mar  1 13:00:40 web1 CRON[9]: (root) CMD (true)",
        "Mar  1 13:00:50 web1 gdm-password][1542]: pam_unix(gdm-password:session): session opened for user "
        "dave(uid=1000) by (uid=0)",
        "Mar  1 13:01:00 web1 kernel: [ 5123.456789] sd 6:0:0:0: [sdb] Attached SCSI removable disk",
    ]
    for n, line in enumerate(lines, start=1):  # the host's clock is an hour ahead of UTC: Splunk's _time is right
        state.index(T0 + timedelta(seconds=10 * n), line, index="os", sourcetype="linux_secure", user="extracted")
    record = "type=USER_CMD msg=audit(1709294470.120:77): pid=4 uid=1000 auid=1000 msg='cwd=\"/\" cmd=6964 res=success'"
    state.index(T0 + timedelta(seconds=70), record, index="os", sourcetype="linux_audit")
    sudo = SourceSettings(format="sudo", product="linux", service="sudo")
    async with running(sim.create_app(state)) as url:
        secure = connector(url, source=sudo, name="secure", search="search index=os sourcetype=linux_secure")
        assert await poll(services, secure) == 6
        auditd = SourceSettings(format="auditd", product="linux", service="auditd")
        audit = connector(url, source=auditd, name="audit", search="search index=os sourcetype=linux_audit")
        assert await poll(services, audit) == 1
    async with services.store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(events).order_by(events.c.time))).mappings().all()
    seen = [(row["source"], row["actor"], row["action"], row["outcome"], row["time"]) for row in rows]
    assert [entry[:4] for entry in seen] == [
        ("secure", "alice", "sudo.command", "success"),
        ("secure", "bob", "sudo.denied", "failure"),
        ("secure", "carol", "sshd.login", "success"),
        ("secure", "extracted", None, "unknown"),  # a program scoring does not read: the row as Splunk gives it
        ("secure", "dave", "login.console_open", "success"),  # at the machine's screen
        ("secure", None, "kernel.removable_attached", "success"),  # a removable disk: whoever is at the machine
        ("audit", "1000", "USER_CMD", "success"),
    ]
    assert [entry[4].replace(tzinfo=UTC) for entry in seen[:6]] == [T0 + timedelta(seconds=10 * n) for n in range(1, 7)]
    assert rows[0]["raw"]["command"] == "/bin/cat /etc/shadow" and rows[6]["raw"]["cmd"] == "id"
    assert rows[3]["raw"]["_raw"] == lines[3]
