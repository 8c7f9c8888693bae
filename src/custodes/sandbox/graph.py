"""A local Microsoft identity platform + Microsoft Graph simulator, written from Microsoft's documentation.

Login (served for the real authority ``https://login.microsoftonline.com/<tenant>``, which msal requires; route
msal's requests here with `connectors.graph_auth.RoutedSession`):
``GET /<tenant>/v2.0/.well-known/openid-configuration``, ``GET /common/discovery/instance`` and
``POST /<tenant>/oauth2/v2.0/token`` for the client-credentials grant
(AADSTS errors as ``{error, error_description, error_codes, ...}``).

Graph (``/v1.0``, bearer tokens from the token endpoint): ``/auditLogs/signIns`` (``createdDateTime``),
``/auditLogs/directoryAudits`` (``activityDateTime``), ``/identityProtection/riskDetections``
(``detectedDateTime``), newest first, with ``$filter`` on the time property (``ge``/``gt``/``le``/``lt`` joined
by ``and``), ``$top`` and ``@odata.nextLink`` carrying an opaque ``$skiptoken``. The reports API's
throttle (5 requests per 10 s per app by default) answers 429 ``TooManyRequests`` with ``Retry-After``. Errors
are Graph's ``{"error": {"code", "message", "innerError"}}``. Faults: `faults` (status, drop, delay),
`empty_pages` and `repeat_pages`.

Directory (identity inventory): ``/users`` (``$select`` honoured; ``signInActivity`` only when selected, as Graph
does), ``/groups`` and ``/groups/{id}/members``, ``/directoryRoles`` and ``/directoryRoles/{id}/members``, and
``/reports/authenticationMethods/userRegistrationDetails`` (a report: under the reports throttle). Collections
page by ``$top`` (1..999, default 100) with ``@odata.nextLink`` carrying an opaque ``$skiptoken``; an unknown
group or role is 404 ``Request_ResourceNotFound``. Seed them with `add_user`, `add_group`, `add_role`.

Containment (writes): ``GET``/``PATCH /users/{id|userPrincipalName}`` (``accountEnabled``; ``signInActivity`` and
``signInSessionsValidFromDateTime`` only when selected), ``POST /users/{id}/revokeSignInSessions`` (moves
``signInSessionsValidFromDateTime`` to now), ``GET /identityProtection/riskyUsers/{id}`` and ``POST
/identityProtection/riskyUsers/confirmCompromised|dismiss`` (``{"userIds": [...]}``, 204), ``POST
/groups/{id}/members/$ref`` (``{"@odata.id": ".../directoryObjects/{id}"}``; 400 ``Request_BadRequest`` when the
reference already exists) and ``DELETE /groups/{id}/members/{id}/$ref``. Authentication methods: ``GET
/users/{id}/authentication/methods`` and ``DELETE /users/{id}/authentication/<kind>Methods/{id}`` (204; the password
method cannot be deleted, nor the default method while other methods remain: 400 ``badRequest``, as Graph answers);
the registration report follows the methods left. Unknown objects are 404
``Request_ResourceNotFound``; a `Fault` with ``status=429`` and ``retry_after`` throttles any of them. Seed risk with
`add_risky_user`; `mutations()` lists the writes that reached the handlers.
"""

from __future__ import annotations

import bisect
import copy
import math
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from custodes.sandbox.paging import injected_page, page_token, read_page_token
from custodes.sandbox.pathfaults import Fault, Faults, middleware

AUTHORITY = "https://login.microsoftonline.com"
MAX_TOP = 1000
FEEDS = {
    "signIns": ("/v1.0/auditLogs/signIns", "createdDateTime"),
    "directoryAudits": ("/v1.0/auditLogs/directoryAudits", "activityDateTime"),
    "riskDetections": ("/v1.0/identityProtection/riskDetections", "detectedDateTime"),
}
_CLAUSE = re.compile(r"^\s*(\w+)\s+(ge|gt|le|lt)\s+(\S+)\s*$")


def graph_time(epoch: float) -> str:
    """A time as Graph writes it (ISO 8601, UTC, ``Z``)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Graph's error object."""
    inner = {"date": graph_time(time.time()), "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}
    body = {"error": {"code": code, "message": message, "innerError": inner}}
    return web.json_response(body, status=status, headers=headers)


def _desc(key: str) -> tuple[int, ...]:
    """A sort key that orders strings in reverse (for newest-first lists kept sorted ascending)."""
    return (*(-ord(char) for char in key), 1)


@dataclass(slots=True)
class GraphState:
    """A tenant: one app registration, the records of each feed, faults and a request log."""

    tenant: str = "contoso.onmicrosoft.com"
    client_id: str = "11111111-2222-3333-4444-555555555555"
    client_secret: str = "sandbox-graph-secret"  # noqa: S105 (the simulator's own)
    reports_limit: int = 5
    reports_window: float = 10.0
    token_lifetime: int = 3599
    clock: Callable[[], float] = time.time
    records: dict[str, list[tuple[float, str, dict[str, Any]]]] = field(
        default_factory=lambda: {name: [] for name in FEEDS}
    )
    tokens: dict[str, float] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    empty_pages: int = 0
    repeat_pages: int = 0
    requests: list[tuple[str, str, int, float]] = field(default_factory=list)
    token_requests: int = 0
    _reports: deque[float] = field(default_factory=deque)
    users: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, tuple[dict[str, Any], list[str]]] = field(default_factory=dict)
    roles: dict[str, tuple[dict[str, Any], list[str]]] = field(default_factory=dict)
    registrations: list[dict[str, Any]] = field(default_factory=list)
    sessions_valid_from: dict[str, float] = field(default_factory=dict)
    risky: dict[str, dict[str, Any]] = field(default_factory=dict)
    methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    default_method: dict[str, str] = field(default_factory=dict)

    def add(self, feed: str, record: dict[str, Any], at: float | None = None) -> dict[str, Any]:
        """Add a record to a feed (``signIns``, ``directoryAudits``, ``riskDetections``), ordered and filtered by
        `at`, else by its time property (unreadable: now)."""
        _, prop = FEEDS[feed]
        if at is None:
            try:
                at = datetime.fromisoformat(str(record.get(prop)).replace("Z", "+00:00")).timestamp()
            except ValueError:
                at = self.clock()
        item = (at, str(record.get("id") or uuid.uuid4()), copy.deepcopy(record))
        bisect.insort(self.records[feed], item, key=lambda i: (-i[0], _desc(i[1])))
        return record

    def add_signin(self, upn: str, at: float, *, error_code: int = 0, ip: str = "203.0.113.9") -> dict[str, Any]:
        """Add a sign-in as Graph returns it."""
        return self.add(
            "signIns",
            {
                "id": str(uuid.uuid4()),
                "createdDateTime": graph_time(at),
                "userDisplayName": upn.split("@")[0].title(),
                "userPrincipalName": upn,
                "userId": str(uuid.uuid5(uuid.NAMESPACE_DNS, upn)),
                "appId": "00000002-0000-0ff1-ce00-000000000000",
                "appDisplayName": "Office 365 Exchange Online",
                "ipAddress": ip,
                "clientAppUsed": "Browser",
                "correlationId": str(uuid.uuid4()),
                "conditionalAccessStatus": "success",
                "isInteractive": True,
                "riskDetail": "none",
                "riskLevelAggregated": "none",
                "riskLevelDuringSignIn": "none",
                "riskState": "none",
                "riskEventTypes_v2": [],
                "resourceDisplayName": "Office 365 Exchange Online",
                "resourceId": "00000002-0000-0ff1-ce00-000000000000",
                "status": {"errorCode": error_code, "failureReason": None, "additionalDetails": None},
                "deviceDetail": {"deviceId": "", "operatingSystem": "Windows 10", "browser": "Edge 120.0"},
                "location": {"city": "Zurich", "state": "Zurich", "countryOrRegion": "CH"},
                "appliedConditionalAccessPolicies": [],
            },
        )

    def add_audit(self, actor: str, activity: str, at: float, target: str = "bob@contoso.com") -> dict[str, Any]:
        """Add a directory audit record as Graph returns it."""
        return self.add(
            "directoryAudits",
            {
                "id": f"Directory_{uuid.uuid4()}",
                "category": "RoleManagement",
                "correlationId": str(uuid.uuid4()),
                "result": "success",
                "resultReason": "",
                "activityDisplayName": activity,
                "activityDateTime": graph_time(at),
                "loggedByService": "Core Directory",
                "operationType": "Assign",
                "initiatedBy": {"app": None, "user": {"id": str(uuid.uuid4()), "userPrincipalName": actor}},
                "targetResources": [{"id": str(uuid.uuid4()), "type": "User", "userPrincipalName": target}],
                "additionalDetails": [],
            },
        )

    def add_risk(self, upn: str, at: float, kind: str = "unfamiliarFeatures") -> dict[str, Any]:
        """Add a risk detection as Graph returns it."""
        return self.add(
            "riskDetections",
            {
                "id": secrets.token_hex(32),
                "requestId": str(uuid.uuid4()),
                "correlationId": str(uuid.uuid4()),
                "riskEventType": kind,
                "riskState": "atRisk",
                "riskLevel": "medium",
                "riskDetail": "none",
                "source": "IdentityProtection",
                "detectionTimingType": "realtime",
                "activity": "signin",
                "ipAddress": "198.51.100.23",
                "activityDateTime": graph_time(at),
                "detectedDateTime": graph_time(at),
                "lastUpdatedDateTime": graph_time(at),
                "userId": str(uuid.uuid5(uuid.NAMESPACE_DNS, upn)),
                "userDisplayName": upn.split("@")[0].title(),
                "userPrincipalName": upn,
                "location": {"city": "Lagos", "countryOrRegion": "NG"},
            },
        )

    def add_user(
        self,
        upn: str,
        *,
        last_sign_in: float | None = None,
        enabled: bool = True,
        mfa: bool = True,
        created: float | None = None,
        user_type: str = "Member",
    ) -> dict[str, Any]:
        """Add a directory user (and its authentication methods registration) as Graph returns them."""
        user_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, upn))
        stamp = None if last_sign_in is None else graph_time(last_sign_in)
        user = {
            "id": user_id,
            "displayName": upn.split("@")[0].replace(".", " ").title(),
            "userPrincipalName": upn,
            "mail": upn,
            "accountEnabled": enabled,
            "userType": user_type,
            "createdDateTime": graph_time(self.clock() - 400 * 86400 if created is None else created),
            "signInActivity": {
                "lastSignInDateTime": stamp,
                "lastSignInRequestId": None if stamp is None else str(uuid.uuid4()),
                "lastNonInteractiveSignInDateTime": None,
                "lastNonInteractiveSignInRequestId": None,
                "lastSuccessfulSignInDateTime": stamp,
                "lastSuccessfulSignInRequestId": None,
            },
        }
        self.users.append(user)
        self.methods[user_id] = [_method("password", id="28c10230-6103-485e-b985-444c60001490")]
        if mfa:
            self.add_method(upn, "microsoftAuthenticator", default=True, displayName="iPhone 15")
        self.registrations.append(
            {
                "id": user_id,
                "userPrincipalName": upn,
                "userDisplayName": user["displayName"],
                "userType": user_type.lower(),
                "isAdmin": False,
                "isSsprRegistered": mfa,
                "isSsprEnabled": False,
                "isSsprCapable": False,
                "isMfaRegistered": mfa,
                "isMfaCapable": mfa,
                "isPasswordlessCapable": False,
                "methodsRegistered": ["microsoftAuthenticatorPush"] if mfa else [],
                "defaultMfaMethod": "microsoftAuthenticatorPush" if mfa else "none",
                "lastUpdatedDateTime": graph_time(self.clock()),
            }
        )
        return copy.deepcopy(user)

    def add_method(self, upn: str, kind: str, *, default: bool = False, **properties: Any) -> dict[str, Any]:
        """Register an authentication method (``phone``, ``microsoftAuthenticator``, ``fido2``, ``softwareOath``,
        ``email``, ``windowsHelloForBusiness``, ``temporaryAccessPass``) for a user; `default` makes it the default
        sign-in method."""
        user = self.find_user(upn)
        if user is None:
            raise KeyError(upn)
        method = _method(kind, **properties)
        self.methods[user["id"]].append(method)
        if default:
            self.default_method[user["id"]] = method["id"]
        self._sync_registration(user["id"])
        return copy.deepcopy(method)

    def _sync_registration(self, user_id: str) -> None:
        """Keep the registration report in step with the user's methods, as the report is derived from them."""
        methods = self.methods.get(user_id, [])
        kinds = [kind for kind in map(method_kind, methods) if kind != "password"]
        default = next((method_kind(m) for m in methods if m["id"] == self.default_method.get(user_id)), None)
        for registration in self.registrations:
            if registration["id"] == user_id:
                registration["methodsRegistered"] = [_REGISTERED.get(kind, kind) for kind in kinds]
                registration["isMfaRegistered"] = registration["isMfaCapable"] = bool(kinds)
                registration["defaultMfaMethod"] = _REGISTERED.get(default, "none") if default else "none"

    def _member_ids(self, upns: list[str]) -> list[str]:
        known = {user.get("userPrincipalName"): user.get("id") for user in self.users}
        return [str(known[upn]) for upn in upns]

    def add_group(self, name: str, members: list[str]) -> str:
        """Add a security group whose members are the users with these UPNs; return its id."""
        group_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"group:{name}"))
        group = {"id": group_id, "displayName": name, "securityEnabled": True, "mailEnabled": False}
        self.groups[group_id] = (group, self._member_ids(members))
        return group_id

    def add_role(self, name: str, members: list[str]) -> str:
        """Activate a directory role (e.g. ``Global Administrator``) held by these UPNs; return its id."""
        role_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"role:{name}"))
        role = {"id": role_id, "displayName": name, "roleTemplateId": str(uuid.uuid5(uuid.NAMESPACE_OID, name))}
        self.roles[role_id] = (role, self._member_ids(members))
        return role_id

    def find_user(self, key: str) -> dict[str, Any] | None:
        """A user by object id or userPrincipalName (case-insensitive), as stored, or None."""
        folded = key.casefold()
        for user in self.users:
            if user["id"] == key or str(user.get("userPrincipalName", "")).casefold() == folded:
                return user
        return None

    def add_risky_user(self, upn: str, *, level: str = "high", risk_state: str = "atRisk") -> dict[str, Any]:
        """Mark a directory user risky in Identity Protection (``riskLevel``, ``riskState``)."""
        user = self.find_user(upn)
        if user is None:
            raise KeyError(upn)
        self.risky[user["id"]] = self._risky_record(user, level, risk_state, "none")
        return copy.deepcopy(self.risky[user["id"]])

    def _risky_record(self, user: dict[str, Any], level: str, risk_state: str, detail: str) -> dict[str, Any]:
        return {
            "id": user["id"],
            "isDeleted": False,
            "isProcessing": False,
            "riskLastUpdatedDateTime": graph_time(self.clock()),
            "riskLevel": level,
            "riskState": risk_state,
            "riskDetail": detail,
            "userDisplayName": user.get("displayName"),
            "userPrincipalName": user.get("userPrincipalName"),
        }

    def group_members(self, group_id: str) -> list[str]:
        """The member ids of a group."""
        return list(self.groups[group_id][1])

    def mutations(self) -> list[tuple[str, str, int]]:
        """The Graph writes (method, path, status) that reached the handlers, in order."""
        return [
            (method, path, status)
            for method, path, status, _ in self.requests
            if path.startswith("/v1.0/") and method not in {"GET", "HEAD"}
        ]


STATE = web.AppKey("graph_state", GraphState)

_REGISTERED = {
    "microsoftAuthenticator": "microsoftAuthenticatorPush",
    "phone": "mobilePhone",
    "fido2": "passKeyDeviceBound",
    "softwareOath": "softwareOneTimePasscode",
    "email": "email",
    "windowsHelloForBusiness": "windowsHelloForBusiness",
    "temporaryAccessPass": "temporaryAccessPass",
}


def _method(kind: str, **properties: Any) -> dict[str, Any]:
    odata = f"#microsoft.graph.{kind}AuthenticationMethod"
    return {"@odata.type": odata, "id": properties.pop("id", str(uuid.uuid4())), **properties}


def method_kind(method: dict[str, Any]) -> str:
    """``phone`` for ``#microsoft.graph.phoneAuthenticationMethod``, and so on."""
    return str(method.get("@odata.type", "")).removeprefix("#microsoft.graph.").removesuffix("AuthenticationMethod")


async def openid_configuration(request: web.Request) -> web.Response:
    """The tenant's OpenID configuration, naming the real authority's endpoints."""
    tenant = request.match_info["tenant"]
    base = f"{AUTHORITY}/{tenant}"
    return web.json_response(
        {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "tenant_region_scope": "EU",
        }
    )


async def instance_discovery(request: web.Request) -> web.Response:
    """Instance discovery metadata for the public cloud."""
    return web.json_response(
        {
            "tenant_discovery_endpoint": f"{AUTHORITY}/common/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [
                {
                    "preferred_network": "login.microsoftonline.com",
                    "preferred_cache": "login.windows.net",
                    "aliases": ["login.microsoftonline.com", "login.windows.net", "login.microsoft.com"],
                }
            ],
        }
    )


def _aadsts(status: int, error: str, code: int, description: str) -> web.Response:
    return web.json_response(
        {
            "error": error,
            "error_description": f"AADSTS{code}: {description}",
            "error_codes": [code],
            "timestamp": graph_time(time.time()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status=status,
    )


async def token(request: web.Request) -> web.Response:
    """The client-credentials grant."""
    state = request.app[STATE]
    state.token_requests += 1
    form = await request.post()
    if request.match_info["tenant"] not in {state.tenant, "organizations"}:
        return _aadsts(400, "invalid_request", 90002, f"Tenant '{request.match_info['tenant']}' not found.")
    if form.get("grant_type") != "client_credentials":
        return _aadsts(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    if form.get("client_id") != state.client_id:
        return _aadsts(400, "unauthorized_client", 700016, "Application was not found in the directory.")
    if form.get("client_secret") != state.client_secret:
        return _aadsts(401, "invalid_client", 7000215, "Invalid client secret provided.")
    if form.get("scope") != "https://graph.microsoft.com/.default":
        return _aadsts(400, "invalid_scope", 1002012, "The provided value for scope is not valid.")
    issued = secrets.token_urlsafe(32)
    state.tokens[issued] = state.clock() + state.token_lifetime
    return web.json_response(
        {
            "token_type": "Bearer",
            "expires_in": state.token_lifetime,
            "ext_expires_in": state.token_lifetime,
            "access_token": issued,
        }
    )


def _bearer(request: web.Request) -> web.Response | None:
    state = request.app[STATE]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    expiry = state.tokens.get(value) if scheme == "Bearer" else None
    if expiry is None or expiry < state.clock():
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
    return None


def _throttled(state: GraphState) -> web.Response | None:
    now = time.monotonic()
    while state._reports and now - state._reports[0] >= state.reports_window:
        state._reports.popleft()
    if len(state._reports) >= state.reports_limit:
        wait = math.ceil(state.reports_window - (now - state._reports[0]))
        return graph_error(429, "TooManyRequests", "Too many requests.", headers={"Retry-After": str(max(1, wait))})
    state._reports.append(now)
    return None


def _bounds(expression: str, prop: str) -> tuple[float | None, float | None, bool, bool]:
    low: float | None = None
    high: float | None = None
    low_open = high_open = False
    for clause in re.split(r"\s+and\s+", expression.strip()):
        found = _CLAUSE.match(clause)
        if found is None or found[1] != prop:
            raise ValueError(f"Invalid filter clause: {clause}")
        at = datetime.fromisoformat(found[3].replace("Z", "+00:00")).timestamp()
        if found[2] in {"ge", "gt"}:
            low, low_open = at, found[2] == "gt"
        else:
            high, high_open = at, found[2] == "lt"
    return low, high, low_open, high_open


def _feed(name: str) -> Callable[[web.Request], Any]:
    path, prop = FEEDS[name]

    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        if path.startswith("/v1.0/auditLogs") and (refused := _throttled(state)) is not None:
            return refused
        query = request.query
        skip = query.get("$skiptoken")
        try:
            if skip is not None:
                position = read_page_token(skip)
                expression, top = str(position["filter"]), int(position["top"])
            else:
                position, expression = {}, query.get("$filter", "")
                top = int(query.get("$top", "100"))
            low, high, low_open, high_open = _bounds(expression, prop) if expression else (None, None, False, False)
        except (ValueError, KeyError, TypeError) as error:
            return graph_error(400, "BadRequest", str(error) or "Invalid request")
        if not 1 <= top <= MAX_TOP:
            return graph_error(400, "BadRequest", f"Invalid page size specified: '{top}'. Must be between 1 and 1000.")
        rows = [
            item
            for item in state.records[name]
            if (low is None or (item[0] > low if low_open else item[0] >= low))
            and (high is None or (item[0] < high if high_open else item[0] <= high))
        ]
        if "at" in position:
            mark = (float(position["at"]), str(position["id"]))
            rows = [item for item in rows if (item[0], item[1]) < mark]
        page, advanced = injected_page(state, rows[:top])
        following: dict[str, Any] | None = {"filter": expression, "top": top, **position}
        if advanced:
            following = {"filter": expression, "top": top, "at": page[-1][0], "id": page[-1][1]}
        if len(rows) <= len(page):
            following = None
        body: dict[str, Any] = {
            "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#{path.rsplit('/', 1)[1]}",
            "value": [copy.deepcopy(item[2]) for item in page],
        }
        if following is not None:
            body["@odata.nextLink"] = str(request.url.with_query({"$skiptoken": page_token(following)}))
        return web.json_response(body)

    return handle


MAX_DIRECTORY_TOP = 999


def _collection(request: web.Request, items: list[dict[str, Any]], context: str) -> web.Response:
    """One page of a directory collection: ``$select``, ``$top`` and an opaque ``$skiptoken``."""
    query = request.query
    try:
        if "$skiptoken" in query:
            position = read_page_token(query["$skiptoken"])
            skip, top, select = int(position["skip"]), int(position["top"]), str(position["select"])
        else:
            skip, top, select = 0, int(query.get("$top", "100")), query.get("$select", "")
    except (ValueError, KeyError, TypeError):
        return graph_error(400, "BadRequest", "Invalid request")
    if not 1 <= top <= MAX_DIRECTORY_TOP:
        return graph_error(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{top}'.")
    fields = [name.strip() for name in select.split(",") if name.strip()]
    page = items[skip : skip + top]
    if fields:
        page = [{key: item[key] for key in ["id", *fields] if key in item} for item in page]
    else:
        page = [{key: value for key, value in item.items() if key != "signInActivity"} for item in page]
    body: dict[str, Any] = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#{context}", "value": page}
    if skip + top < len(items):
        token = page_token({"skip": skip + top, "top": top, "select": select})
        body["@odata.nextLink"] = str(request.url.with_query({"$skiptoken": token}))
    return web.json_response(copy.deepcopy(body))


async def _users(request: web.Request) -> web.Response:
    return _collection(request, request.app[STATE].users, "users")


async def _registrations(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if (refused := _throttled(state)) is not None:
        return refused
    return _collection(request, state.registrations, "reports/authenticationMethods/userRegistrationDetails")


def _containers(kind: str) -> Callable[[web.Request], Any]:
    async def listing(request: web.Request) -> web.Response:
        state = request.app[STATE]
        found = state.groups if kind == "groups" else state.roles
        return _collection(request, [item for item, _ in found.values()], kind)

    return listing


def _members(kind: str) -> Callable[[web.Request], Any]:
    async def listing(request: web.Request) -> web.Response:
        state = request.app[STATE]
        found = state.groups if kind == "groups" else state.roles
        key = request.match_info["id"]
        if key not in found:
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
        by_id = {user["id"]: user for user in state.users}
        members = [
            {"@odata.type": "#microsoft.graph.user", **by_id[member]} for member in found[key][1] if member in by_id
        ]
        return _collection(request, members, "directoryObjects")

    return listing


_SELECT_ONLY = ("signInActivity", "signInSessionsValidFromDateTime")


def _not_found(key: str) -> web.Response:
    return graph_error(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects are not present.",
    )


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _user_view(state: GraphState, user: dict[str, Any], select: str) -> dict[str, Any]:
    """A user as ``GET /users/{id}`` returns it: properties returned only on ``$select`` only when selected."""
    valid_from = state.sessions_valid_from.get(user["id"])
    since = user.get("createdDateTime") if valid_from is None else graph_time(valid_from)
    full = {**user, "signInSessionsValidFromDateTime": since}
    fields = [name.strip() for name in select.split(",") if name.strip()]
    if fields:
        view = {key: full[key] for key in ["id", *fields] if key in full}
    else:
        view = {key: value for key, value in full.items() if key not in _SELECT_ONLY}
    return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users/$entity", **copy.deepcopy(view)}


async def _user(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["id"]
    user = state.find_user(key)
    if user is None:
        return _not_found(key)
    return web.json_response(_user_view(state, user, request.query.get("$select", "")))


_WRITABLE = {"accountEnabled": bool, "displayName": str}


async def _update_user(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["id"]
    user = state.find_user(key)
    if user is None:
        return _not_found(key)
    body = await _json_object(request)
    if body is None:
        return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
    for name, value in body.items():
        kind = _WRITABLE.get(name)
        if kind is None:
            return graph_error(400, "Request_BadRequest", f"Invalid property '{name}'.")
        if not isinstance(value, kind):
            return graph_error(400, "Request_BadRequest", f"Invalid value specified for property '{name}'.")
    user.update(body)
    return web.Response(status=204)


async def _revoke_sessions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["id"]
    user = state.find_user(key)
    if user is None:
        return _not_found(key)
    state.sessions_valid_from[user["id"]] = float(int(state.clock()))
    return web.json_response(
        {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean", "value": True}
    )


async def _risky_user(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["id"]
    found = state.risky.get(key)
    if found is None:
        return _not_found(key)
    context = "https://graph.microsoft.com/v1.0/$metadata#identityProtection/riskyUsers/$entity"
    return web.json_response({"@odata.context": context, **copy.deepcopy(found)})


def _risk_action(kind: str) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        body = await _json_object(request)
        ids = body.get("userIds") if body is not None else None
        if not isinstance(ids, list) or not ids or not all(isinstance(item, str) for item in ids):
            return graph_error(400, "BadRequest", "The request body must contain a non-empty 'userIds' array.")
        users = [state.find_user(item) for item in ids]
        for item, user in zip(ids, users, strict=True):
            if user is None or user["id"] != item:
                return _not_found(item)
        for user in users:
            assert user is not None
            if kind == "confirmCompromised":
                state.risky[user["id"]] = state._risky_record(
                    user, "high", "confirmedCompromised", "adminConfirmedUserCompromised"
                )
            elif user["id"] in state.risky:
                state.risky[user["id"]] = state._risky_record(user, "none", "dismissed", "adminDismissedAllRiskForUser")
        return web.Response(status=204)

    return handle


_REFERENCE = re.compile(r"^https://graph\.microsoft\.com/v1\.0/directoryObjects/([^/?#]+)$")


async def _add_member(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["id"]
    if key not in state.groups:
        return _not_found(key)
    body = await _json_object(request)
    reference = body.get("@odata.id") if body is not None else None
    found = _REFERENCE.match(reference) if isinstance(reference, str) else None
    if found is None:
        return graph_error(400, "BadRequest", "Invalid object identifier in '@odata.id'.")
    user = state.find_user(found[1])
    if user is None or user["id"] != found[1]:
        return _not_found(found[1])
    members = state.groups[key][1]
    if user["id"] in members:
        return graph_error(
            400,
            "Request_BadRequest",
            "One or more added object references already exist for the following modified properties: 'members'.",
        )
    members.append(user["id"])
    return web.Response(status=204)


async def _remove_member(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key, member = request.match_info["id"], request.match_info["member"]
    if key not in state.groups:
        return _not_found(key)
    members = state.groups[key][1]
    if member not in members:
        return _not_found(member)
    members.remove(member)
    return web.Response(status=204)


async def _methods(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key = request.match_info["id"]
    user = state.find_user(key)
    if user is None:
        return _not_found(key)
    context = f"https://graph.microsoft.com/v1.0/$metadata#users('{user['id']}')/authentication/methods"
    return web.json_response({"@odata.context": context, "value": copy.deepcopy(state.methods[user["id"]])})


async def _delete_method(request: web.Request) -> web.Response:
    state = request.app[STATE]
    key, segment, method_id = (request.match_info[name] for name in ("id", "kind", "method"))
    user = state.find_user(key)
    if user is None:
        return _not_found(key)
    methods = state.methods[user["id"]]
    found = next((m for m in methods if m["id"] == method_id and f"{method_kind(m)}Methods" == segment), None)
    if found is None:
        return graph_error(404, "itemNotFound", f"The requested authentication method '{method_id}' was not found.")
    if method_kind(found) == "password":
        return graph_error(400, "badRequest", "The password method cannot be deleted; reset the password instead.")
    others = [m for m in methods if m is not found and method_kind(m) != "password"]
    if state.default_method.get(user["id"]) == method_id and others:
        return graph_error(
            400,
            "badRequest",
            "Cannot delete default method with other methods configured. Please change default method before deletion.",
        )
    methods.remove(found)
    if state.default_method.get(user["id"]) == method_id:
        del state.default_method[user["id"]]
    state._sync_registration(user["id"])
    return web.Response(status=204)


def _render(fault: Fault, request: web.Request) -> web.StreamResponse:
    status = fault.status or 500
    if status == 429:
        return graph_error(429, "TooManyRequests", "Too many requests.")
    return graph_error(status, "ServiceUnavailable" if status == 503 else "InternalServerError", "Service error.")


def create_app(state: GraphState | None = None) -> web.Application:
    """Login and Graph on one application (state at ``app[STATE]``)."""
    current = state or GraphState()

    @web.middleware
    async def protocol(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        if request.path.startswith("/v1.0/"):
            refused = _bearer(request)
            if refused is not None:
                current.requests.append((request.method, request.path, 401, time.monotonic()))
                return refused
        response: web.StreamResponse = await handler(request)
        response.headers["request-id"] = str(uuid.uuid4())
        current.requests.append((request.method, request.path, response.status, time.monotonic()))
        return response

    app = web.Application(middlewares=[protocol, middleware(current.faults, _render)])
    app[STATE] = current
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/common/discovery/instance", instance_discovery)
    app.router.add_post("/{tenant}/oauth2/v2.0/token", token)
    for name, (path, _) in FEEDS.items():
        app.router.add_get(path, _feed(name))
    app.router.add_get("/v1.0/users", _users)
    app.router.add_get("/v1.0/reports/authenticationMethods/userRegistrationDetails", _registrations)
    for kind in ("groups", "directoryRoles"):
        app.router.add_get(f"/v1.0/{kind}", _containers(kind))
        app.router.add_get(f"/v1.0/{kind}/{{id}}/members", _members(kind))
    app.router.add_get("/v1.0/users/{id}", _user)
    app.router.add_patch("/v1.0/users/{id}", _update_user)
    app.router.add_post("/v1.0/users/{id}/revokeSignInSessions", _revoke_sessions)
    app.router.add_post("/v1.0/identityProtection/riskyUsers/confirmCompromised", _risk_action("confirmCompromised"))
    app.router.add_post("/v1.0/identityProtection/riskyUsers/dismiss", _risk_action("dismiss"))
    app.router.add_get("/v1.0/identityProtection/riskyUsers/{id}", _risky_user)
    app.router.add_post("/v1.0/groups/{id}/members/$ref", _add_member)
    app.router.add_delete("/v1.0/groups/{id}/members/{member}/$ref", _remove_member)
    app.router.add_get("/v1.0/users/{id}/authentication/methods", _methods)
    app.router.add_delete("/v1.0/users/{id}/authentication/{kind}/{method}", _delete_method)
    return app
