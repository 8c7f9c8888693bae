"""Behaviour features out of privileged-access records: HashiCorp Vault's audit device, sudo's syslog lines as the
file tail parses them, Linux auditd records, Teleport's audit events and Kubernetes API servers' audit events. Each
reader takes one record of its shape (the `Extractor` recognises it) and returns who acted, what it counts and the
machine it happened on."""

from __future__ import annotations

import re
from collections.abc import Set
from typing import Any

from custodes.connectors.envelope import audit_actor, dig, teleport_outcome, vault_actor
from custodes.detections.scoring import winlog
from custodes.detections.scoring.observation import Observation, as_list, counting, name_of, on_machine, whole
from custodes.model import Outcome

VAULT_SYSTEM = ("sys/", "auth/", "identity/", "cubbyhole/")
"""Vault paths that hold no secret of the organisation's (configuration, logins, identities, a token's own space)."""
VAULT_GRANTS = re.compile(
    r"^(?:sys/policy/|sys/policies/acl/|identity/(?:entity|group)|auth/[^/]+/(?:users|groups|role)/(?P<name>[^/]+))"
)
"""Paths whose write changes what someone may do: a policy, an identity or group, a user's or group's policies on
an auth method (the user's name captured, to see a grant to oneself)."""
VAULT_SENSITIVE = re.compile(r"^sys/(?:audit|auth|generate-root|generate-recovery-token|raw|rekey|rotate|seal)(?:/|$)")
"""Paths whose write switches off what watches Vault or opens it wide: an audit device or auth method enabled or
removed, a root or recovery token generated, storage read raw, the keys changed, the vault sealed."""
VAULT_DENIED = "permission denied"

SUDO_WRONG_SECRET = "incorrect password"  # noqa: S105 (the text of sudo's refusal, not a secret)
"""sudo's refusal for a wrong password (a failed authentication); any other refusal (not in sudoers, a command not
allowed, a host not allowed) is a privilege refused."""

AUDIT_DENIED = frozenset({"-13", "-1"})
"""A syscall's exit for EACCES and EPERM: what the common rules for unauthorised file access record."""
AUDIT_LOGINS = frozenset({"USER_LOGIN", "USER_AUTH"})

TELEPORT_SESSIONS = frozenset({"session.start", "exec", "db.session.start", "windows.desktop.session.start"})
"""Teleport events that open a privileged session: a shell, a command, a database, a Windows desktop."""
TELEPORT_LOGINS = frozenset({"user.login", "auth"})
"""A sign-in to Teleport (`user.login`) and an SSH authentication at a node (`auth`)."""
TELEPORT_COMPUTER = "teleport.dev/computer_name"
"""The label naming a Windows desktop's computer."""


KUBE_SESSIONS = frozenset({"exec", "attach", "portforward"})
"""Pod subresources that open a session into a container (logged when the stream starts: `ResponseStarted`)."""
KUBE_WRITES = frozenset({"create", "update", "patch"})
KUBE_READS = frozenset({"get", "list", "watch"})
KUBE_RBAC = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})
"""Who may do what: a role's rules or a binding to it written is a grant."""
KUBE_CREDENTIALS = frozenset(
    {("serviceaccounts", "token"), ("certificatesigningrequests", ""), ("certificatesigningrequests", "approval")}
)
"""A service account's token minted, a client certificate asked for or approved: credentials made by hand."""
KUBE_ADMISSION = frozenset(
    {
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
    }
)
"""What decides which objects the cluster admits: changed or removed, its policies no longer hold."""
KUBE_GONE = frozenset({"namespaces", "persistentvolumes", "persistentvolumeclaims", "secrets"})
"""Resources whose deletion takes data with it."""


def kubernetes(raw: dict[str, Any]) -> Observation | None:
    """A Kubernetes audit event (`audit.k8s.io`: a cluster's audit log, EKS's, AKS's `kube-audit`), by the user the
    API server authenticated (`user.username`; service accounts and nodes are `system:...`, services by default).
    An API server logs a request at several stages: it counts once, when complete (a session into a pod when its
    stream starts)."""
    name = name_of(dig(raw, "user.username"))
    if name is None:
        return None
    ref = raw.get("objectRef")
    ref = ref if isinstance(ref, dict) else {}
    subresource = str(ref.get("subresource") or "")
    stage = raw.get("stage")
    if stage is not None and stage != ("ResponseStarted" if subresource in KUBE_SESSIONS else "ResponseComplete"):
        return None
    where = f"{ref.get('namespace') or '*'}/{ref.get('name') or '*'}"
    code = whole(dig(raw, "responseStatus.code"))
    return kube_call(name, str(raw.get("verb") or ""), str(ref.get("resource") or ""), subresource, code, where)


def kube_call(name: str, verb: str, resource: str, subresource: str, code: int, where: str) -> Observation:
    """What one Kubernetes API call counts: a session into a pod; a secret read (a file read, a first access to
    it); a role or a binding to one written (a grant); a credential minted or the admission policies changed
    (sensitive); a namespace, volume or secret deleted, or a collection (a deletion); refused, an access denied (403)
    or a failed sign-in (401)."""
    if code in (401, 403):
        return counting(name, "signin_failed" if code == 401 else "access_denied")
    if code >= 400:
        return counting(name, None)
    if subresource in KUBE_SESSIONS:
        return counting(name, "pam_session")
    if resource == "secrets" and not subresource and verb in KUBE_READS:
        obs = counting(name, "file_access")
        obs.seen.append(("resource", f"k8s:secrets:{where}"))
        return obs
    feature = None
    if resource in KUBE_RBAC and verb in KUBE_WRITES:
        feature = "privilege_grant"
    elif _kube_sensitive(verb, resource, subresource):
        feature = "sensitive_api"
    elif verb == "deletecollection" or (verb == "delete" and resource in KUBE_GONE):
        feature = "delete"
    return counting(name, feature)


def _kube_sensitive(verb: str, resource: str, subresource: str) -> bool:
    if resource in KUBE_ADMISSION:
        return verb in KUBE_WRITES or verb == "delete"
    return verb in KUBE_WRITES and (resource, subresource) in KUBE_CREDENTIALS


def vault(raw: dict[str, Any]) -> Observation | None:
    """A Vault audit entry. Vault writes each request twice, as a `request` entry and as a `response` entry with
    its outcome: only the response counts (the request names the person active). A login refused (its path under
    `auth/.../login`) is a failed sign-in, any other refusal for want of a policy an access denied. A secret read (a
    path outside Vault's own, a transit decryption) is a file read of that path, a secret deleted or destroyed a
    deletion, a policy, identity or user's policies written a grant, and Vault's audit devices, auth methods, root
    generation, raw storage, keys or seal touched a sensitive call."""
    name = vault_actor(raw)
    if name is None:
        return None
    request = raw.get("request")
    if not isinstance(request, dict):
        return None
    path = str(request.get("path") or "")
    login = path.startswith("auth/") and ("/login" in path or path.endswith("/callback"))
    if raw.get("type") != "response":
        return None if login else counting(name, None)  # a login's request names no one its response does not
    operation = str(request.get("operation") or "")
    error = str(raw.get("error") or "")
    if login:
        return counting(name, "signin_failed" if error else "signin")
    if error:
        return counting(name, "access_denied" if VAULT_DENIED in error.lower() else None)
    if operation in ("create", "update") and (grant := VAULT_GRANTS.match(path)) is not None:
        obs = counting(name, "privilege_grant")
        if grant["name"] is not None and grant["name"].lower() == name.lower():
            obs.features.append(("self_grant", 1.0))
        return obs
    if VAULT_SENSITIVE.match(path) and operation not in ("read", "list"):
        return counting(name, "sensitive_api")
    if path.startswith("auth/token/create") and "root" in as_list(dig(raw, "response.auth.policies")):
        return counting(name, "sensitive_api")  # a token with the root policy
    if path.startswith(VAULT_SYSTEM) or "/metadata/" in path:
        return counting(name, None)
    if operation == "read" or (operation == "update" and "/decrypt/" in path):
        obs = counting(name, "file_access")
        obs.seen.append(("resource", f"vault:{path}"))
        return obs
    deleted = operation == "delete" or (operation == "update" and "/destroy/" in path)
    return counting(name, "delete" if deleted else None)


def syslog(raw: dict[str, Any]) -> Observation | None:
    """A sudo, sshd, su, login or kernel line as the file tail parses it (`textlogs.parse_syslog_line`). sudo: a command
    run is a privileged session on the machine, a refusal a failed sign-in (a wrong password) or an access denied (not
    in sudoers, a command or host not allowed); a PAM session's opening and closing are the command's own and count
    nothing. sshd: a login is the person on the machine from elsewhere (no seat there), a failed one a failed sign-in.
    su: a switch to another account (root or a colleague's) is a privileged session on the machine, a failed one (a
    wrong password for that account) a failed sign-in. A session opened at the machine itself (its console or screen,
    `textlogs.LOCAL_LOGINS`) puts the person there, one closed takes them away, as a Windows logon and logoff do; a
    removable disk the kernel attached is a removable media connection on the machine, for whoever is at it."""
    kind = raw.get("event")
    if kind == "removable_attached":
        return on_machine(name_of(raw.get("host")), [("usb", 1.0)])
    name = name_of(raw.get("user"))
    if name is None:
        return None
    if kind in ("console_open", "console_close"):
        return winlog.at_machine(name, name_of(raw.get("host")), "", left=kind == "console_close")
    feature = None
    if kind in ("command", "switch"):
        feature = "pam_session"
    elif kind == "switch_failed":
        feature = "signin_failed"
    elif kind == "denied":
        feature = "signin_failed" if SUDO_WRONG_SECRET in str(raw.get("reason") or "").lower() else "access_denied"
    elif kind == "login_failed":
        return counting(name, "signin_failed")
    obs = counting(name, feature)
    obs.host = name_of(raw.get("host"))
    return obs


def auditd(raw: dict[str, Any], uids: Set[str]) -> Observation | None:
    """A Linux auditd record by a person (see `audit_actor`; a bare uid number only where `uids`, the numbers
    `scoring.identities.aliases` maps, holds it: uid 1000 is someone else on every machine whose accounts are not
    managed centrally): a login's success (on the machine the record's `node` names, else a sign-in) or failure, an
    authentication failed, a command run through sudo (`USER_CMD`; one refused is an access denied), a syscall
    refused for want of rights, the audit rules removed or auditing switched off (a sensitive call)."""
    name = audit_actor(raw, person=True)
    if name is None or (name.isdigit() and name not in uids):
        return None
    kind = raw.get("type")
    failed = raw.get("success") == "no"
    host = name_of(raw.get("node"))
    feature = None
    if kind in AUDIT_LOGINS:
        if failed:
            feature = "signin_failed"
        elif kind == "USER_LOGIN" and host is None:
            feature = "signin"
    elif kind == "USER_CMD":
        feature = "access_denied" if failed else "pam_session"
    elif kind == "SYSCALL":
        feature = "access_denied" if failed and raw.get("exit") in AUDIT_DENIED else None
    elif kind == "CONFIG_CHANGE" and (raw.get("op") == "remove_rule" or raw.get("audit_enabled") == "0"):
        feature = "sensitive_api"
    obs = counting(name, feature)
    obs.host = host
    return obs


def teleport(raw: dict[str, Any], event: str) -> Observation | None:
    """A Teleport audit event: a session opened (a shell, a command, a database, a Windows desktop) on the machine it
    names, or refused (an access denied); a sign-in to Teleport or an SSH authentication, and their failures (the
    outcome as the envelope reads it, `teleport_outcome`)."""
    name = name_of(raw.get("user"))
    if name is None:
        return None
    failed = teleport_outcome(raw) is Outcome.FAILURE
    feature = None
    if event in TELEPORT_SESSIONS:
        feature = "access_denied" if failed else "pam_session"
    elif event in TELEPORT_LOGINS:
        feature = "signin_failed" if failed else "signin" if event == "user.login" else None
    obs = counting(name, feature)
    if not failed:
        labels = raw.get("desktop_labels")
        desktop = labels.get(TELEPORT_COMPUTER) if isinstance(labels, dict) else None
        obs.host = name_of(raw.get("server_hostname") or desktop)
    return obs
