"""A local Jira Cloud REST API v3 simulator: create, read and search issues.

Follows Atlassian's documentation for the parts Custodes uses: basic auth with an account email and API token
(401 ``Client must be authenticated to access this resource.`` otherwise), ``POST /rest/api/3/issue`` with
ADF descriptions (201 ``{id, key, self}``; 400 ``{"errorMessages": [...], "errors": {field: message}}``),
``GET /rest/api/3/issue/{key}`` (404 ``Issue does not exist or you do not have permission to see it.``) and
``POST /rest/api/3/search/jql`` for a small JQL subset (``field = value`` clauses joined by ``AND`` over
``project``, ``labels`` and ``key``; anything else is a 400 JQL error). Tests can make the next requests
answer 429 with ``Retry-After`` or a 5xx.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from custodes.sandbox.statusfaults import StatusFaults

PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
_CLAUSE = re.compile(r'\s*(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([\w.@-]+))\s*', re.ASCII)


@dataclass(slots=True)
class JiraState:
    """Accounts, projects and issues of the simulated site, and injected faults."""

    email: str
    api_token: str
    projects: set[str] = field(default_factory=lambda: {"SEC"})
    issue_types: set[str] = field(default_factory=lambda: {"Task", "Bug", "Incident"})
    issues: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    _faults: StatusFaults = field(default_factory=StatusFaults)

    def fail_next(self, count: int = 1, *, status: int = 429, retry_after: int = 1) -> None:
        """Answer the next `count` requests with `status` (429 carries ``Retry-After``)."""
        self._faults.add(count, status, retry_after)

    def created(self, project: str | None = None) -> list[dict[str, Any]]:
        """Issues created so far (optionally in one project)."""
        return [i for i in self.issues if project is None or i["fields"]["project"]["key"] == project]


STATE = web.AppKey("jira_state", JiraState)


def _errors(status: int, messages: list[str], errors: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errorMessages": messages, "errors": errors or {}}, status=status)


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[STATE]
    state.requests += 1
    if (fault := state._faults.take()) is not None:
        if fault.status == 429:
            return web.json_response(
                {"errorMessages": ["Rate limit exceeded."], "errors": {}},
                status=429,
                headers={"Retry-After": str(fault.retry_after), "X-RateLimit-Reason": "jira-burst-based"},
            )
        return web.json_response({"errorMessages": ["Internal server error"], "errors": {}}, status=fault.status)
    expected = base64.b64encode(f"{state.email}:{state.api_token}".encode()).decode()
    if request.headers.get("Authorization") != f"Basic {expected}":
        return web.Response(
            status=401,
            text="Client must be authenticated to access this resource.",
            headers={"WWW-Authenticate": 'Basic realm="protected-area"'},
        )
    response: web.StreamResponse = await handler(request)
    return response


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _valid_adf(value: Any) -> bool:
    if not isinstance(value, dict) or value.get("type") != "doc" or value.get("version") != 1:
        return False
    content = value.get("content")
    return isinstance(content, list) and all(_valid_node(node) for node in content)


def _valid_node(node: Any) -> bool:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return False
    if node["type"] == "text":
        return isinstance(node.get("text"), str) and node["text"] != ""
    children = node.get("content", [])
    return isinstance(children, list) and all(_valid_node(child) for child in children)


def _issue_errors(state: JiraState, fields: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    project = fields.get("project")
    if not isinstance(project, dict) or project.get("key") not in state.projects:
        errors["project"] = "Specify a valid project ID or key"
    issue_type = fields.get("issuetype")
    if not isinstance(issue_type, dict) or issue_type.get("name") not in state.issue_types:
        errors["issuetype"] = "Specify a valid issue type"
    summary = fields.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        errors["summary"] = "You must specify a summary of the issue."
    elif len(summary) > 255 or "\n" in summary:
        errors["summary"] = "Summary must be less than 255 characters and contain no line breaks."
    if "description" in fields and not _valid_adf(fields["description"]):
        errors["description"] = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"
    labels = fields.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        errors["labels"] = "Field 'labels' must be an array of strings."
    else:
        for label in labels:
            if not label or " " in label or len(label) > 255:
                errors["labels"] = f"The label '{label}' contains spaces which is invalid."
    if "priority" in fields:
        priority = fields["priority"]
        if not isinstance(priority, dict) or priority.get("name") not in PRIORITIES:
            errors["priority"] = "Specify the Priority (id or name) in the field"
    return errors


async def _create(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_body(request)
    if body is None:
        return _errors(400, ["Unexpected character: the request body is not a JSON object."])
    fields = body.get("fields")
    if not isinstance(fields, dict):
        return _errors(400, ["No fields provided in the request."])
    errors = _issue_errors(state, fields)
    if errors:
        return _errors(400, [], errors)
    project = fields["project"]["key"]
    number = len(state.created(project)) + 1
    issue_id = str(10000 + len(state.issues) + 1)
    key = f"{project}-{number}"
    stored = {"id": issue_id, "key": key, "fields": {**fields, "labels": list(fields.get("labels", []))}}
    state.issues.append(stored)
    return web.json_response({"id": issue_id, "key": key, "self": _self(request, issue_id)}, status=201)


def _self(request: web.Request, issue_id: str) -> str:
    return f"{request.scheme}://{request.host}/rest/api/3/issue/{issue_id}"


async def _get(request: web.Request) -> web.Response:
    state = request.app[STATE]
    wanted = request.match_info["key"]
    for issue in state.issues:
        if wanted in {issue["id"], issue["key"]}:
            return web.json_response({**issue, "self": _self(request, issue["id"])})
    return _errors(404, ["Issue does not exist or you do not have permission to see it."])


def _parse_jql(jql: str) -> list[tuple[str, str]] | str:
    """`field = value AND ...` as pairs, or the JQL error message."""
    clauses: list[tuple[str, str]] = []
    for part in re.split(r"\s+AND\s+", jql.strip(), flags=re.IGNORECASE):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            return f"Error in the JQL Query: the query '{part.strip()}' is not supported here."
        name = match.group(1).lower()
        if name not in {"project", "labels", "key"}:
            return f"Field '{match.group(1)}' does not exist or you do not have permission to view it."
        value = match.group(2) if match.group(2) is not None else match.group(3)
        clauses.append((name, value.replace('\\"', '"')))
    return clauses


def _matches(issue: dict[str, Any], clauses: list[tuple[str, str]]) -> bool:
    for name, value in clauses:
        if name == "project" and issue["fields"]["project"]["key"] != value:
            return False
        if name == "labels" and value not in issue["fields"]["labels"]:
            return False
        if name == "key" and issue["key"] != value:
            return False
    return True


async def _search(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _json_body(request)
    if body is None or not isinstance(body.get("jql"), str):
        return _errors(400, ["The request body must be a JSON object with a 'jql' string."])
    clauses = _parse_jql(body["jql"])
    if isinstance(clauses, str):
        return _errors(400, [clauses])
    limit = body.get("maxResults", 50)
    if not isinstance(limit, int) or limit < 1:
        return _errors(400, ["'maxResults' must be a positive integer."])
    wanted = body.get("fields") or []
    found = [issue for issue in state.issues if _matches(issue, clauses)]
    issues = [
        {
            "id": issue["id"],
            "key": issue["key"],
            "self": _self(request, issue["id"]),
            "fields": {name: issue["fields"].get(name) for name in wanted if name in issue["fields"]},
        }
        for issue in found[:limit]
    ]
    return web.json_response({"issues": issues, "isLast": len(found) <= limit})


def create_app(state: JiraState) -> web.Application:
    """The simulator as an aiohttp application."""
    app = web.Application(middlewares=[_guard])
    app[STATE] = state
    app.router.add_post("/rest/api/3/issue", _create)
    app.router.add_get("/rest/api/3/issue/{key}", _get)
    app.router.add_post("/rest/api/3/search/jql", _search)
    return app
