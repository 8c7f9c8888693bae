"""Privileged access through behaviour scoring: Vault audit entries, sudo lines and auditd records as the file tail
parses them, and Teleport events, read for the person who acted (the same name the event is routed by), what they
did and on which machine; and a refusal for want of rights, in every source that states one, as an access denied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from custodes.config import ScoringSettings
from custodes.connectors.envelope import to_event
from custodes.connectors.textlogs import SYSLOG_PROGRAMS, parse_auditd_line, parse_syslog_line
from custodes.detections.scoring.engine import ScoringEngine
from custodes.detections.scoring.evaluate import LabelRow, evaluate
from custodes.detections.scoring.features import Extractor, record_time
from custodes.detections.scoring.identity import PERSON, SERVICE, IdentityResolver, Person
from custodes.detections.scoring.observation import ARRIVED, LEFT, Observation
from custodes.model import Outcome
from custodes.sources import SourceFormatName, SourceSettings
from elastic_shapes import elastic_auth
from sentinel_shapes import sentinel_syslog

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
EXTRACTOR = Extractor(ScoringSettings(), ["corp.example"])
RESOLVER = IdentityResolver([], ScoringSettings().identities)


def observed(record: dict[str, Any]) -> Observation | None:
    return EXTRACTOR.extract(record)


def names(obs: Observation | None) -> set[str]:
    assert obs is not None
    return {name for name, _ in obs.features}


def routed(record: dict[str, Any], fmt: SourceFormatName) -> str | None:
    """The actor the event is routed by (a cluster's partition, rules): the one scoring reads."""
    return to_event(record, SourceSettings(format=fmt), fmt).actor


# Vault --------------------------------------------------------------------------------------------------
def vault(
    path: str,
    operation: str = "read",
    *,
    kind: str = "response",
    auth: dict[str, Any] | None = None,
    error: str = "",
    **fields: Any,
) -> dict[str, Any]:
    """A Vault file audit device entry (tokens HMAC-hashed, as Vault writes them)."""
    return {
        "time": "2024-03-01T11:00:00.123456Z",
        "type": kind,
        "auth": {
            "client_token": "hmac-sha256:3f1e",
            "accessor": "hmac-sha256:9a0b",
            "display_name": "ldap-jdoe",
            "policies": ["default", "dev"],
            "metadata": {"username": "jdoe"},
            "entity_id": "7d2e3f4a-0000-4000-8000-000000000001",
        }
        if auth is None
        else auth,
        "request": {
            "id": "f0c2a8f6-1111-4111-8111-000000000001",
            "operation": operation,
            "mount_type": "kv",
            "path": path,
            "remote_address": "10.1.2.3",
            "namespace": {"id": "root"},
        },
        "error": error,
        **fields,
    }


@pytest.mark.parametrize(
    ("record", "features"),
    [
        (vault("secret/data/prod/db"), {"file_access"}),  # a secret read
        (vault("database/creds/readonly"), {"file_access"}),  # dynamic credentials issued
        (vault("transit/decrypt/payroll", "update"), {"file_access"}),
        (vault("secret/metadata/prod/db"), set()),  # the listing's view, not the secret
        (vault("secret/data/prod/db", kind="request"), set()),  # the same act as its response
        (vault("sys/mounts"), set()),
        (vault("secret/data/prod/db", "delete"), {"delete"}),
        (vault("secret/destroy/prod/db", "update"), {"delete"}),
        (vault("sys/policies/acl/ops", "update"), {"privilege_grant"}),
        (vault("auth/ldap/users/jdoe", "update"), {"privilege_grant", "self_grant"}),
        (vault("auth/userpass/users/ann/policies", "update"), {"privilege_grant"}),
        (vault("identity/group/name/admins", "update"), {"privilege_grant"}),
        (vault("sys/audit/file", "delete"), {"sensitive_api"}),  # the audit device switched off
        (vault("sys/generate-root/attempt", "update"), {"sensitive_api"}),
        (vault("sys/audit-hash/file", "update"), set()),  # a value hashed as the audit log would
        (vault("sys/seal-status"), set()),
        (
            vault("auth/token/create", "update", response={"auth": {"policies": ["root"]}}),
            {"sensitive_api"},
        ),
        (vault("auth/token/create", "update", response={"auth": {"policies": ["default"]}}), set()),
        (vault("secret/data/hr/salaries", error="1 error occurred:\n\t* permission denied\n\n"), {"access_denied"}),
        (vault("secret/data/gone", error="no handler for route"), set()),
        (vault("auth/ldap/login/jdoe", "update"), {"signin"}),
    ],
)
def test_vault_responses_are_read_for_what_the_person_did(record: dict[str, Any], features: set[str]) -> None:
    obs = observed(record)
    assert obs is not None and obs.actor == "jdoe" == routed(record, "vault")
    assert names(obs) == features
    if features == {"file_access"}:
        assert obs.seen == [("resource", f"vault:{record['request']['path']}")]


@pytest.mark.parametrize(
    ("auth", "actor", "kind"),
    [
        ({"display_name": "oidc-jane@corp.example", "metadata": {"role": "default"}}, "jane@corp.example", PERSON),
        ({"display_name": "okta-ann", "metadata": {"username": "ann", "policies": "dev"}}, "ann", PERSON),
        ({"display_name": "approle", "metadata": {"role_name": "ci"}}, "vault/approle", SERVICE),
        ({"display_name": "kubernetes-payments-api"}, "vault/kubernetes-payments-api", SERVICE),
        ({"display_name": "root", "policies": ["root"]}, "vault/root", SERVICE),
        ({"display_name": "token-backup"}, "vault/token-backup", SERVICE),
    ],
)
def test_a_vault_token_is_its_person_or_a_machine(auth: dict[str, Any], actor: str, kind: str) -> None:
    record = vault("secret/data/app", auth=auth)
    obs = observed(record)
    assert obs is not None and obs.actor == actor == routed(record, "vault")
    assert RESOLVER.resolve(actor)[1] == kind


def test_a_refused_vault_login_is_the_name_tried_and_its_request_entry_no_one() -> None:
    refused = vault("auth/userpass/login/mallory", "update", auth={}, error="invalid username or password")
    obs = observed(refused)
    assert obs is not None and obs.actor == "mallory" == routed(refused, "vault")
    assert names(obs) == {"signin_failed"}
    assert observed({**refused, "type": "request", "error": ""}) is None, "a spray's requests make no entities"
    assert observed(vault("auth/oidc/oidc/callback", "read", auth={}, error="expired state")) is None
    assert observed({**vault("secret/data/x"), "request": "not an object"}) is None


# sudo and auditd as the file tail parses them -----------------------------------------------------------
GDM_OPENED = (
    "Mar  1 09:00:01 ws-1 gdm-password][1542]: pam_unix(gdm-password:session): session opened for user alice(uid=1000) "
    "by (uid=0)"
)
REMOVABLE = "Mar  1 11:59:58 ws-1 kernel: [ 5123.456789] sd 6:0:0:0: [sdb] Attached SCSI removable disk"


def syslog(line: str) -> dict[str, Any]:
    record, warning = parse_syslog_line(line, NOW)
    assert warning is None
    return record


@pytest.mark.parametrize(
    ("line", "features"),
    [
        (
            "Mar  1 11:59:58 web-1 sudo[4242]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; "
            "COMMAND=/usr/bin/systemctl restart nginx",
            {"pam_session"},
        ),
        (
            "Mar  1 11:59:58 web-1 sudo[4243]:    alice : user NOT in sudoers ; TTY=pts/0 ; PWD=/home/alice ; "
            "USER=root ; COMMAND=/bin/cat /etc/shadow",
            {"access_denied"},
        ),
        (
            "Mar  1 11:59:58 web-1 sudo[4244]:    alice : command not allowed ; TTY=pts/0 ; PWD=/ ; USER=root ; "
            "COMMAND=/bin/bash",
            {"access_denied"},
        ),
        (
            "Mar  1 11:59:58 web-1 sudo[4245]:    alice : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/ ; "
            "USER=root ; COMMAND=/bin/bash",
            {"signin_failed"},
        ),
        (
            "Mar  1 11:59:58 web-1 sudo[4246]: pam_unix(sudo:session): session opened for user root(uid=0) by "
            "alice(uid=1000)",
            set(),  # the command's own session
        ),
    ],
)
def test_sudo_lines_are_privileged_sessions_or_refusals_on_their_machine(line: str, features: set[str]) -> None:
    record = syslog(line)
    obs = observed(record)
    assert obs is not None and obs.actor == "alice" == routed(record, "sudo")
    assert names(obs) == features and obs.host == "web-1"
    assert record_time(record) == datetime(2024, 3, 1, 11, 59, 58, tzinfo=UTC)


@pytest.mark.parametrize(
    ("line", "features", "host"),
    [
        (
            "Mar  1 11:59:58 web-1 sshd[77]: Accepted publickey for alice from 10.0.0.9 port 51000 ssh2: ED25519 "
            "SHA256:Yx4mVYc0P2",
            set(),  # a logon at the machine, as a Windows logon is
            "web-1",
        ),
        (
            "Mar  1 11:59:58 web-1 sshd[78]: Failed password for alice from 203.0.113.7 port 4022 ssh2",
            {"signin_failed"},
            None,
        ),
        (
            "Mar  1 11:59:58 web-1 sshd[79]: Failed password for invalid user alice from 203.0.113.7 port 4023 ssh2",
            {"signin_failed"},
            None,
        ),
    ],
)
def test_sshd_logins_put_the_person_at_the_machine(line: str, features: set[str], host: str | None) -> None:
    record = syslog(line)
    obs = observed(record)
    assert obs is not None and obs.actor == "alice" == routed(record, "sudo")
    assert names(obs) == features and obs.host == host
    event = to_event(record, SourceSettings(format="sudo"), "sudo")
    assert event.action in ("sshd.login", "sshd.login_failed") and event.src_ip in ("10.0.0.9", "203.0.113.7")


@pytest.mark.parametrize(
    ("line", "event", "features", "outcome"),
    [
        ("Mar  1 11:59:58 web-1 su[901]: (to root) alice on pts/0", "switch", {"pam_session"}, Outcome.SUCCESS),
        ("Mar  1 11:59:58 web-1 su[902]: (to bob) alice on pts/1", "switch", {"pam_session"}, Outcome.SUCCESS),
        (
            "Mar  1 11:59:58 web-1 su[903]: FAILED SU (to root) alice on pts/0",
            "switch_failed",
            {"signin_failed"},
            Outcome.FAILURE,
        ),
        ("Mar  1 11:59:58 web-1 su[904]: Successful su for root by alice", "switch", {"pam_session"}, Outcome.SUCCESS),
        (
            "Mar  1 11:59:58 web-1 su[905]: FAILED su for root by alice",
            "switch_failed",
            {"signin_failed"},
            Outcome.FAILURE,
        ),
        (
            "Mar  1 11:59:58 web-1 su[906]: pam_unix(su-l:session): session opened for user root(uid=0) by "
            "alice(uid=1000)",
            "session_open",
            set(),  # the switch's own session: its line counted the switch
            Outcome.SUCCESS,
        ),
    ],
)
def test_su_switches_are_privileged_sessions_or_failed_sign_ins_on_their_machine(
    line: str, event: str, features: set[str], outcome: Outcome
) -> None:
    record = syslog(line)
    assert record["event"] == event
    obs = observed(record)
    assert obs is not None and obs.actor == "alice" == routed(record, "sudo")
    assert names(obs) == features and obs.host == "web-1"
    mapped = to_event(record, SourceSettings(format="sudo"), "sudo")
    assert (mapped.action, mapped.outcome) == (f"su.{event}", outcome)
    assert mapped.target in ("root", "bob")


def test_su_authentication_failures_are_not_counted_twice() -> None:
    """PAM's line for a failed su repeats what su's own `FAILED SU` line says."""
    record = syslog(
        "Mar  1 11:59:58 web-1 su[903]: pam_unix(su:auth): authentication failure; logname=alice uid=1000 euid=0 "
        "tty=pts/0 ruser=alice rhost=  user=root"
    )
    assert record["event"] == "other" and observed(record) is None
    assert to_event(record, SourceSettings(format="sudo"), "sudo").action == "sudo.other"


def test_other_programs_lines_are_no_one_s() -> None:
    """A line of another program that looks like sudo's (`user : ...`) is not a sudo command."""
    record = syslog("Mar  1 11:59:58 web-1 CRON[5]: alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/ls")
    assert record["event"] == "other" and observed(record) is None
    assert syslog("Mar  1 11:59:58 web-1 sshd[80]: Connection closed by 10.0.0.9 port 51000")["event"] == "other"


@pytest.mark.parametrize(
    "line",
    [
        "Mar  1 11:59:58 web-1 sudo[4242]:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/ls /root",
        "Mar  1 11:59:58 web-1 sudo[4243]:    alice : user NOT in sudoers ; TTY=pts/0 ; PWD=/ ; USER=root ; "
        "COMMAND=/bin/cat /etc/shadow",
        "Mar  1 11:59:58 web-1 sudo[4246]: pam_unix(sudo:session): session opened for user root(uid=0) by "
        "alice(uid=1000)",
        "Mar  1 11:59:58 web-1 sshd[77]: Accepted publickey for alice from 10.0.0.9 port 51000 ssh2",
        "Mar  1 11:59:58 web-1 sshd[78]: Failed password for invalid user alice from 203.0.113.7 port 4023 ssh2",
        "Mar  1 11:59:58 web-1 su[901]: (to root) alice on pts/0",
        "Mar  1 11:59:58 web-1 su[903]: FAILED SU (to root) alice on pts/0",
        "Mar  1 11:59:58 web-1 CRON[5]: alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/ls",
        GDM_OPENED,
        "Mar  1 11:59:58 ws-1 login[812]: pam_unix(login:session): session closed for user alice",
        REMOVABLE,
    ],
)
@pytest.mark.parametrize("shape", [sentinel_syslog, elastic_auth])
def test_syslog_lines_in_sentinel_and_elasticsearch_are_read_as_the_file_tail_reads_them(
    line: str, shape: Callable[[str, int], dict[str, Any]]
) -> None:
    """Sentinel's `Syslog` table holds a line's host, program and message in columns; Elastic's System integration
    parses sudo's commands and sshd's logins into `system.auth` and leaves other lines' messages."""
    record, stored = syslog(line), shape(line, NOW.year)
    assert observed(stored) == observed(record)
    native = to_event(record, SourceSettings(format="sudo"), "sudo")
    event = to_event(stored, SourceSettings(format="generic"), "siem")
    if record["event"] == "other" and record["program"] not in SYSLOG_PROGRAMS:  # no one's, stored as in the file
        assert event.actor is None
    else:
        fields = ("actor", "target", "outcome", "src_ip", "time")
        assert [getattr(event, f) for f in fields] == [getattr(native, f) for f in fields]


@pytest.mark.parametrize(
    ("line", "expected", "action"),
    [
        (GDM_OPENED, Observation("alice", [], [("host", "ws-1")], "ws-1", ARRIVED), "login.console_open"),
        (
            "Mar  1 17:00:01 ws-1 login[812]: pam_unix(login:session): session closed for user alice",
            Observation("alice", [], [("host", "ws-1")], "ws-1", LEFT),
            "login.console_close",
        ),
        (
            "Mar  1 09:00:01 ws-1 lightdm: pam_unix(lightdm:session): session opened for user alice(uid=1000) by "
            "(uid=0)",
            Observation("alice", [], [("host", "ws-1")], "ws-1", ARRIVED),
            "login.console_open",
        ),
        (REMOVABLE, Observation("", [("usb", 1.0)], [], "ws-1"), "kernel.removable_attached"),
        ("Mar  1 11:59:58 ws-1 kernel: [ 5123.4] sd 6:0:0:0: [sda] Attached SCSI disk", None, "sudo.other"),
        (  # at boot: a card reader's slot, or a drive left in
            "Mar  1 08:59:58 ws-1 kernel: [    4.518263] sd 0:0:0:0: [sda] Attached SCSI removable disk",
            None,
            "sudo.other",
        ),
        (  # a kernel line without its uptime (RHEL's /var/log/messages)
            "Mar  1 11:59:58 ws-1 kernel: sd 6:0:0:0: [sdb] Attached SCSI removable disk",
            Observation("", [("usb", 1.0)], [], "ws-1"),
            "kernel.removable_attached",
        ),
        ("Mar  1 11:59:58 ws-1 kernel: usb 1-1: new high-speed USB device number 5 using xhci_hcd", None, "sudo.other"),
        (
            "Mar  1 11:59:58 ws-1 CRON[44]: pam_unix(cron:session): session opened for user alice(uid=1000) by (uid=0)",
            None,
            "sudo.other",
        ),
        (
            "Mar  1 11:59:58 ws-1 systemd-logind[612]: New session 3 of user alice.",  # local or over ssh: not said
            None,
            "sudo.other",
        ),
    ],
)
def test_a_session_at_the_machine_itself_and_a_removable_disk_are_read_from_syslog(
    line: str, expected: Observation | None, action: str
) -> None:
    """A PAM session of the console's `login` or a display manager puts its person at the machine (closed: takes
    them away), as a Windows logon does; the kernel attaching a removable disk is a removable media connection on
    the machine, for whoever is at it. A cron job's session, a fixed disk, a removable disk attached at boot (the
    kernel's uptime under `BOOT_SECONDS`), a USB device that is not a disk and logind's sessions (which do not say
    whether they came over the network) are not read."""
    record = syslog(line)
    assert observed(record) == expected
    event = to_event(record, SourceSettings(format="sudo"), "syslog")
    assert event.action == action
    assert event.actor == ("alice" if expected is not None and expected.actor else None)


def test_a_removable_disk_attached_on_linux_goes_to_the_person_at_its_screen() -> None:
    """Read end to end: alice logs on at bob's workstation's screen, the kernel attaches a removable disk there,
    alice logs off, and another is attached: the first is alice's, on bob's machine; the second bob's, its owner's."""
    settings = ScoringSettings(pseudonymise=False)
    people = [Person(id="alice@corp.example"), Person(id="bob@corp.example", hosts=["ws-1"])]
    engine = ScoringEngine(settings, IdentityResolver(people, settings.identities), org_domains=["corp.example"])
    lines = [
        GDM_OPENED,
        "Mar  1 09:10:00 ws-1 kernel: [ 5123.456789] sd 6:0:0:0: [sdb] Attached SCSI removable disk",
        "Mar  1 10:00:00 ws-1 gdm-password][1542]: pam_unix(gdm-password:session): session closed for user alice",
        "Mar  1 10:30:00 ws-1 kernel: [ 7123.456789] sd 7:0:0:0: [sdc] Attached SCSI removable disk",
    ]
    given = []
    for number, line in enumerate(lines):
        event = to_event(syslog(line), SourceSettings(format="sudo"), "syslog")
        given.append(engine.observe(replace(event, id=f"e{number}")))
    assert given == ["alice@corp.example", "alice@corp.example", "alice@corp.example", "bob@corp.example"]
    alice = engine.states["alice@corp.example"].open
    assert alice is not None and alice.counts["usb"] == 1.0 and set(alice.owners) == {"bob@corp.example"}


def audit(line: str) -> dict[str, Any]:
    record, warning = parse_auditd_line(line, NOW)
    assert warning is None
    return record


ENRICHED = '\x1dAUID="alice" UID="alice"'


@pytest.mark.parametrize(
    ("line", "actor", "features", "host"),
    [
        (  # the enriched format names the login user
            "node=db-1 type=USER_CMD msg=audit(1709290800.123:456): pid=4242 uid=1000 auid=1000 ses=3 "
            'msg=\'cwd="/home/alice" cmd=2F62696E2F62617368 exe="/usr/bin/sudo" terminal=pts/0 res=success\''
            + ENRICHED,
            "alice",
            {"pam_session"},
            "db-1",
        ),
        (
            "type=USER_CMD msg=audit(1709290800.123:457): pid=4242 uid=1000 auid=1000 ses=3 "
            'msg=\'cwd="/" cmd=2F62696E2F7368 exe="/usr/bin/sudo" terminal=pts/0 res=failed\'' + ENRICHED,
            "alice",
            {"access_denied"},
            None,
        ),
        (
            "node=db-1 type=USER_LOGIN msg=audit(1709290800.200:458): pid=900 uid=0 auid=1000 ses=4 "
            'msg=\'op=login id=1000 exe="/usr/sbin/sshd" hostname=10.0.0.9 addr=10.0.0.9 terminal=ssh '
            "res=success'" + ENRICHED,
            "alice",
            set(),  # a logon at the machine, as a Windows logon is
            "db-1",
        ),
        (  # a login refused names the account tried, in the raw format too
            "type=USER_LOGIN msg=audit(1709290800.300:459): pid=901 uid=0 auid=4294967295 ses=4294967295 "
            'msg=\'op=login acct="alice" exe="/usr/sbin/sshd" hostname=? addr=203.0.113.7 terminal=ssh '
            "res=failed'",
            "alice",
            {"signin_failed"},
            None,
        ),
        (  # the common rule for unauthorised file access: exit=-EACCES
            "node=db-1 type=SYSCALL msg=audit(1709290800.400:460): arch=c000003e syscall=257 success=no exit=-13 "
            'a0=ffffff9c items=1 ppid=1 pid=77 auid=1000 uid=1000 comm="cat" exe="/usr/bin/cat" key="access"'
            + ENRICHED,
            "alice",
            {"access_denied"},
            "db-1",
        ),
        (
            'type=CONFIG_CHANGE msg=audit(1709290800.500:461): auid=1000 ses=3 op=remove_rule key="access" '
            "list=4 res=1" + ENRICHED,
            "alice",
            {"sensitive_api"},
            None,
        ),
    ],
)
def test_auditd_records_are_read_for_the_person_logged_in(
    line: str, actor: str, features: set[str], host: str | None
) -> None:
    record = audit(line)
    obs = observed(record)
    assert obs is not None and obs.actor == actor == routed(record, "auditd")
    assert names(obs) == features and obs.host == host
    assert (
        record_time(record) is not None
        and record_time(record) == to_event(record, SourceSettings(format="auditd"), "auditd").time
    )


@pytest.mark.parametrize(
    "line",
    [
        # uid 1000 is someone else on every machine: without the enriched format's names, no one
        "type=USER_CMD msg=audit(1709290800.123:456): pid=4242 uid=1000 auid=1000 ses=3 "
        'msg=\'cwd="/" cmd=6C73 exe="/usr/bin/sudo" terminal=pts/0 res=success\'',
        # a daemon's own syscall: no login user
        'type=SYSCALL msg=audit(1709290800.1:9): syscall=2 success=no exit=-13 auid=4294967295 uid=33 UID="www-data"',
        # `su` by a login uid, for root: the account tried is not who acted
        "type=USER_AUTH msg=audit(1709290800.1:10): pid=5 uid=1000 auid=1000 ses=3 msg='op=PAM:authentication "
        'acct="root" exe="/usr/bin/su" res=failed\'',
    ],
)
def test_auditd_records_that_name_no_person_are_no_one_s(line: str) -> None:
    assert observed(audit(line)) is None


def test_a_uid_number_names_the_person_the_aliases_map_it_to() -> None:
    """Where accounts are managed centrally (one uid a person on every machine), `scoring.identities.aliases` maps
    the numbers; the event is routed by the same name."""
    settings = ScoringSettings.model_validate({"identities": {"aliases": {"1000": "alice@corp.example"}}})
    record = audit(
        "type=USER_CMD msg=audit(1709290800.123:456): pid=4242 uid=1000 auid=1000 ses=3 "
        'msg=\'cwd="/" cmd=6C73 exe="/usr/bin/sudo" terminal=pts/0 res=success\''
    )
    obs = Extractor(settings, ["corp.example"]).extract(record)
    assert obs is not None and obs.actor == "1000" == routed(record, "auditd")
    resolver = IdentityResolver([], settings.identities)
    assert resolver.resolve(obs.actor) == resolver.resolve("alice@corp.example") and names(obs) == {"pam_session"}


def test_a_refused_syscall_other_than_for_rights_counts_nothing() -> None:
    record = audit(
        'type=SYSCALL msg=audit(1709290800.4:60): syscall=257 success=no exit=-2 auid=1000 key="access"' + ENRICHED
    )
    assert names(observed(record)) == set()


# Teleport --------------------------------------------------------------------------------------------------
def teleport(event: str, code: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": event,
        "code": code,
        "uid": "68a83a99-73ce-4bd7-bbf7-99103c2ba6a0",
        "time": "2024-03-01T10:00:00.000Z",
        "cluster_name": "corp",
        "user": "alice",
        **fields,
    }


DESKTOP = {"teleport.dev/computer_name": "WKS-ANN", "teleport.dev/os": "Windows 11"}


@pytest.mark.parametrize(
    ("record", "features", "host"),
    [
        (teleport("session.start", "T2000I", server_hostname="db-1", login="root"), {"pam_session"}, "db-1"),
        (teleport("exec", "T3002I", server_hostname="db-1", command="pg_dump payroll"), {"pam_session"}, "db-1"),
        (teleport("db.session.start", "TDB00I", db_name="payroll", success=True), {"pam_session"}, None),
        (teleport("db.session.start", "TDB00W", db_name="payroll", success=False), {"access_denied"}, None),
        (
            teleport("windows.desktop.session.start", "TDP00I", desktop_labels=DESKTOP, success=True),
            {"pam_session"},
            "WKS-ANN",  # a colleague's desktop: the engine sees whose machine it is
        ),
        (
            teleport("windows.desktop.session.start", "TDP00W", desktop_labels=DESKTOP, success=False),
            {"access_denied"},
            None,
        ),
        (teleport("user.login", "T1000I", method="oidc", success=True), {"signin"}, None),
        (
            teleport("user.login", "T1000W", method="local", success=False, error="bad password"),
            {"signin_failed"},
            None,
        ),
        (teleport("auth", "T3007W", success=False, error="ssh: principal not allowed"), {"signin_failed"}, None),
        (teleport("session.end", "T2004I", server_hostname="db-1"), set(), "db-1"),
    ],
)
def test_teleport_events_are_sessions_sign_ins_and_refusals(
    record: dict[str, Any], features: set[str], host: str | None
) -> None:
    obs = observed(record)
    assert obs is not None and obs.actor == "alice" == routed(record, "teleport")
    assert names(obs) == features and obs.host == host


# Kubernetes --------------------------------------------------------------------------------------------------
def kube(verb: str, resource: str, *, stage: str = "ResponseComplete", code: int = 200, **ref: str) -> dict[str, Any]:
    """An API server's audit event (`audit.k8s.io/v1`), as a cluster's audit log or EKS writes it."""
    return {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "2f4d3a1e-0000-4000-8000-000000000001",
        "stage": stage,
        "requestURI": f"/api/v1/{resource}",
        "verb": verb,
        "user": {"username": "alice@corp.example", "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.9"],
        "userAgent": "kubectl/v1.30.2",
        "objectRef": {"resource": resource, "apiVersion": "v1", **ref},
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": "2024-03-01T10:00:00.000000Z",
        "stageTimestamp": "2024-03-01T10:00:00.020000Z",
    }


@pytest.mark.parametrize(
    ("record", "features"),
    [
        (kube("get", "secrets", namespace="payments", name="db"), {"file_access"}),
        (kube("get", "secrets", stage="RequestReceived", namespace="payments", name="db"), None),  # counted once
        (kube("create", "pods", stage="ResponseStarted", code=101, subresource="exec", name="api"), {"pam_session"}),
        (kube("create", "pods", subresource="exec", name="api"), None),  # the stream's end: the same session
        (kube("create", "clusterrolebindings", name="me-admin"), {"privilege_grant"}),
        (kube("patch", "clusterroles", name="view"), {"privilege_grant"}),
        (kube("create", "serviceaccounts", subresource="token", namespace="ci", name="deployer"), {"sensitive_api"}),
        (kube("delete", "validatingwebhookconfigurations", name="policy"), {"sensitive_api"}),
        (kube("delete", "namespaces", name="payments"), {"delete"}),
        (kube("deletecollection", "pods", namespace="payments"), {"delete"}),
        (kube("delete", "pods", namespace="payments", name="api-1"), set()),  # a pod replaced, routine
        (kube("list", "secrets", code=403), {"access_denied"}),
        (kube("get", "pods", code=401), {"signin_failed"}),
        (kube("get", "pods", code=404), set()),
    ],
)
def test_kubernetes_audit_events_are_read_once_for_the_user(record: dict[str, Any], features: set[str] | None) -> None:
    obs = observed(record)
    if features is None:
        assert obs is None
        return
    assert obs is not None and obs.actor == "alice@corp.example" and names(obs) == features
    if features == {"file_access"}:
        assert obs.seen == [("resource", "k8s:secrets:payments/db")]
    assert record_time(record) is not None


def test_a_cluster_s_audit_log_is_routed_by_its_user_through_a_generic_source() -> None:
    """As docs/scoring.md says to configure it: the event's actor, id and time are the audit event's."""
    fields = {"id": "auditID", "time": "stageTimestamp", "actor": "user.username", "action": "verb"}
    event = to_event(kube("get", "secrets", name="db"), SourceSettings(format="generic", fields=fields), "k8s")
    assert (event.actor, event.action, event.warnings) == ("alice@corp.example", "get", [])
    assert event.time == datetime(2024, 3, 1, 10, 0, 0, 20000, tzinfo=UTC)


# refusals in the other sources ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("record", "features"),
    [
        (  # CloudTrail: a call the caller's policies do not allow
            {
                "eventName": "GetSecretValue",
                "eventSource": "secretsmanager.amazonaws.com",
                "eventTime": "2024-03-04T09:00:00Z",
                "errorCode": "AccessDenied",
                "userIdentity": {"type": "IAMUser", "userName": "pedro", "arn": "arn:aws:iam::1:user/pedro"},
            },
            {"access_denied"},
        ),
        (
            {
                "eventName": "DescribeInstances",
                "eventSource": "ec2.amazonaws.com",
                "eventTime": "2024-03-04T09:00:00Z",
                "errorCode": "Client.UnauthorizedOperation",
                "userIdentity": {"type": "IAMUser", "userName": "pedro", "arn": "arn:aws:iam::1:user/pedro"},
            },
            {"access_denied"},
        ),
        (  # Okta: an application not assigned to the person
            {
                "eventType": "app.generic.unauth_app_access_attempt",
                "published": "2024-03-04T09:00:00.000Z",
                "actor": {"alternateId": "pedro@corp.example", "type": "User"},
                "outcome": {"result": "FAILURE"},
            },
            {"access_denied"},
        ),
        (  # Entra ID: not assigned to the application
            {
                "userPrincipalName": "pedro@corp.example",
                "createdDateTime": "2024-03-04T09:00:00Z",
                "status": {"errorCode": 50105},
            },
            {"access_denied"},
        ),
        (  # Azure activity log, as the REST API returns it
            {
                "caller": "pedro@corp.example",
                "operationName": {"value": "Microsoft.KeyVault/vaults/secrets/read"},
                "resourceId": "/subscriptions/1/resourceGroups/hr/providers/Microsoft.KeyVault/vaults/hr",
                "status": {"value": "Failed"},
                "subStatus": {"value": "Forbidden"},
                "eventTimestamp": "2024-03-04T09:00:00Z",
            },
            {"access_denied"},
        ),
        (  # a file the person may not open, as a SIEM stores it in ECS
            {
                "@timestamp": "2024-03-04T09:00:00Z",
                "user": {"name": "pedro"},
                "host": {"name": "fs-1"},
                "event": {"category": ["file"], "action": "access", "outcome": "failure"},
                "file": {"path": "D:/hr/salaries.xlsx"},
            },
            {"access_denied"},
        ),
    ],
)
def test_a_refusal_for_want_of_rights_is_an_access_denied_in_every_source(
    record: dict[str, Any], features: set[str]
) -> None:
    obs = observed(record)
    assert obs is not None and obs.actor.startswith("pedro")
    assert names(obs) == features


# end to end ------------------------------------------------------------------------------------------------
def test_an_administrator_probing_for_secrets_is_ranked_first(tmp_path: Path) -> None:
    """The whole route on PAM records alone, as they stand on disk: a syslog file of sudo's lines and Vault's audit
    log, a team's weeks of commands and reads on their own paths, then one person's day of refusals and secret reads
    outside their team, scored by `eval scoring`'s evaluation."""
    people = [f"ops{n}" for n in range(12)]
    start = datetime(2024, 3, 4, 9, tzinfo=UTC)
    secure: list[str] = []
    entries: list[dict[str, Any]] = []

    def at(day: int, minutes: int) -> datetime:
        return start + timedelta(days=day, minutes=minutes)

    def read(person: str, path: str, when: datetime, error: str = "") -> dict[str, Any]:
        return {**vault(path, auth={"display_name": f"ldap-{person}"}, error=error), "time": when.isoformat()}

    for day in range(21):
        for n, person in enumerate(people):
            for k in range(3 + n % 3):
                when = at(day, 30 * k + n)
                secure.append(
                    f"{when.isoformat()} app-{n % 4} sudo[{day * 100 + k}]: {person} : TTY=pts/0 ; PWD=/ ; "
                    "USER=root ; COMMAND=/usr/bin/systemctl status app"
                )
                entries.append(read(person, f"secret/data/team{n % 4}/app", when))
    prober, probe = people[5], at(20, 200)
    for k in range(25):
        when = probe + timedelta(seconds=20 * k)
        entries.append(read(prober, f"secret/data/finance/key{k}", when, "1 error occurred:\n\t* permission denied"))
        entries.append(read(prober, f"secret/data/team{k % 4}/db{k}", when))
    (tmp_path / "secure").write_text("\n".join(secure) + "\n")
    entries.sort(key=lambda r: r["time"])
    (tmp_path / "vault.log").write_bytes(b"\n".join(orjson.dumps(r) for r in entries))
    label = LabelRow("incident-1", "secret_probing", prober, "insider", probe, probe + timedelta(hours=1))
    settings = ScoringSettings(pseudonymise=False, warmup_days=5)
    result = evaluate([tmp_path / "secure", tmp_path / "vault.log"], [label], settings)
    assert result.caught == 1 and result.incidents[0].best_rank == 1
    assert result.events == len(secure) + len(entries), "every line read"
