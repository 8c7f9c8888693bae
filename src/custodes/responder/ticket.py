"""Ticket actions: a Jira issue or a ServiceNow incident per step, never two.

Each action looks for the ticket it may already have made before creating one: in Jira by a label carrying
the step's idempotency key, in ServiceNow by ``correlation_id`` (set to the idempotency key). A replayed step
(a resumed run, a retry after a lost response) then reports ``changed: false`` with the existing ticket.
Credentials come from secret references and travel only in the ``Authorization`` header.
"""

from __future__ import annotations

import base64
from typing import Any, Literal
from urllib.parse import quote, urlencode

from custodes.config import JiraConnection, ServiceNowConnection
from custodes.responder.http import send
from custodes.responder.registry import ActionContext, ActionError, action

LABEL_PREFIX = "custodes-"
JiraPriority = Literal["Highest", "High", "Medium", "Low", "Lowest"]


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def adf(text: str) -> dict[str, Any]:
    """Plain text as an Atlassian Document: one paragraph per blank-line-separated block, line breaks kept."""
    paragraphs: list[dict[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        content: list[dict[str, Any]] = []
        for line in block.split("\n"):
            if content:
                content.append({"type": "hardBreak"})
            if line:
                content.append({"type": "text", "text": line})
        while content and content[-1]["type"] == "hardBreak":
            content.pop()
        if content:
            paragraphs.append({"type": "paragraph", "content": content})
    return {"type": "doc", "version": 1, "content": paragraphs}


def _jira(ctx: ActionContext) -> JiraConnection:
    if ctx.settings.jira is None:
        raise ActionError(
            "no Jira site is configured: set responder.jira (base_url, email, api_token, project)",
            code="not_configured",
        )
    return ctx.settings.jira


@action("ticket.jira_create", plan="open a Jira issue {summary!r}")
async def jira_create(
    ctx: ActionContext,
    *,
    summary: str,
    description: str = "",
    project: str | None = None,
    issue_type: str | None = None,
    priority: JiraPriority | None = None,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Open a Jira issue (REST v3, ADF description) in `project` (default: the configured one), once per step.

    The issue carries the label ``custodes-<idempotency key>``; a replayed step finds it and reports
    ``changed: false``.
    """
    site = _jira(ctx)
    summary = " ".join(summary.split())
    if not summary or len(summary) > 255:
        raise ActionError("a Jira summary is 1 to 255 characters on one line", code="invalid_argument")
    extra = list(labels or [])
    bad = [label for label in extra if not label or any(c.isspace() for c in label)]
    if bad:
        raise ActionError(f"Jira labels cannot be empty or contain spaces: {bad}", code="invalid_argument")
    key_label = LABEL_PREFIX + ctx.idempotency_key
    project_key = project or site.project
    if ctx.dry_run:
        return {"changed": False, "dry_run": True, "would": f"open a Jira issue {summary!r} in {project_key}"}
    base = site.base_url.rstrip("/")
    headers = _basic(site.email.reveal(), site.api_token.reveal())
    timeout = ctx.settings.http_timeout_seconds
    found = await send(
        ctx.http,
        "POST",
        f"{base}/rest/api/3/search/jql",
        headers=headers,
        json={"jql": f'labels = "{key_label}"', "fields": ["summary"], "maxResults": 1},
        timeout_seconds=timeout,
    )
    issues = found.data.get("issues") if isinstance(found.data, dict) else None
    if not isinstance(issues, list):
        raise ActionError("Jira answered the search with something other than issues", code="invalid_response")
    if issues:
        existing = issues[0]
        return {
            "changed": False,
            "key": existing["key"],
            "id": existing["id"],
            "url": f"{base}/browse/{existing['key']}",
        }
    fields: dict[str, Any] = {
        "project": {"key": project_key},
        "issuetype": {"name": issue_type or site.issue_type},
        "summary": summary,
        "labels": [key_label, *extra],
    }
    if description.strip():
        fields["description"] = adf(description)
    if priority is not None:
        fields["priority"] = {"name": priority}
    created = await send(
        ctx.http, "POST", f"{base}/rest/api/3/issue", headers=headers, json={"fields": fields}, timeout_seconds=timeout
    )
    if not isinstance(created.data, dict) or not isinstance(created.data.get("key"), str):
        raise ActionError("Jira answered the create with something other than an issue", code="invalid_response")
    key = created.data["key"]
    return {"changed": True, "key": key, "id": str(created.data.get("id")), "url": f"{base}/browse/{key}"}


def _servicenow(ctx: ActionContext) -> ServiceNowConnection:
    if ctx.settings.servicenow is None:
        raise ActionError(
            "no ServiceNow instance is configured: set responder.servicenow (base_url, username, password)",
            code="not_configured",
        )
    return ctx.settings.servicenow


def _incident(base: str, record: dict[str, Any], *, changed: bool) -> dict[str, Any]:
    sys_id = str(record.get("sys_id", ""))
    return {
        "changed": changed,
        "number": record.get("number"),
        "sys_id": sys_id,
        "url": f"{base}/nav_to.do?uri={quote('incident.do?sys_id=' + sys_id, safe='')}",
    }


@action("ticket.servicenow_create", plan="open a ServiceNow incident {short_description!r}")
async def servicenow_create(
    ctx: ActionContext,
    *,
    short_description: str,
    description: str = "",
    urgency: Literal[1, 2, 3] = 2,
    impact: Literal[1, 2, 3] = 2,
    caller: str | None = None,
    assignment_group: str | None = None,
) -> dict[str, Any]:
    """Open a ServiceNow incident (Table API) once per step: ``correlation_id`` is the idempotency key, and a
    replayed step finds its incident and reports ``changed: false``. Urgency and impact: 1 high, 3 low."""
    instance = _servicenow(ctx)
    short_description = " ".join(short_description.split())
    if not short_description or len(short_description) > 160:
        raise ActionError("a short description is 1 to 160 characters", code="invalid_argument")
    if ctx.dry_run:
        return {"changed": False, "dry_run": True, "would": f"open a ServiceNow incident {short_description!r}"}
    base = instance.base_url.rstrip("/")
    table = f"{base}/api/now/table/incident"
    headers = _basic(instance.username.reveal(), instance.password.reveal())
    timeout = ctx.settings.http_timeout_seconds
    query = urlencode(
        {
            "sysparm_query": f"correlation_id={ctx.idempotency_key}",
            "sysparm_fields": "sys_id,number",
            "sysparm_limit": "1",
        }
    )
    found = await send(ctx.http, "GET", f"{table}?{query}", headers=headers, timeout_seconds=timeout)
    result = found.data.get("result") if isinstance(found.data, dict) else None
    if not isinstance(result, list):
        raise ActionError("ServiceNow answered the query with something other than records", code="invalid_response")
    if result:
        return _incident(base, result[0], changed=False)
    body: dict[str, Any] = {
        "short_description": short_description,
        "description": description,
        "urgency": str(urgency),
        "impact": str(impact),
        "correlation_id": ctx.idempotency_key,
        "correlation_display": "Custodes",
    }
    if caller:
        body["caller_id"] = caller
    if assignment_group:
        body["assignment_group"] = assignment_group
    created = await send(ctx.http, "POST", table, headers=headers, json=body, timeout_seconds=timeout)
    record = created.data.get("result") if isinstance(created.data, dict) else None
    if not isinstance(record, dict) or not record.get("sys_id"):
        raise ActionError("ServiceNow answered the insert with something other than a record", code="invalid_response")
    return _incident(base, record, changed=True)
