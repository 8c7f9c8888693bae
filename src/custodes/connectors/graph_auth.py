"""Microsoft identity platform tokens for Graph: msal client credentials, routed to a simulator when asked.

Kept apart from the connectors so that response actions can use it without importing the connector runtime.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msal
import requests

from custodes.config import Secret

AUTHORITY_HOST = "https://login.microsoftonline.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class RoutedSession(requests.Session):
    """A requests session that sends requests for one URL prefix to another base URL.

    msal needs the real ``https://login.microsoftonline.com/<tenant>`` authority; give it this session as its
    ``http_client`` to reach a simulator or a proxy at `target` instead.
    """

    def __init__(self, prefix: str, target: str) -> None:
        super().__init__()
        self.prefix = prefix.rstrip("/")
        self.target = target.rstrip("/")

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send the request, rewriting the prefix."""
        text = url.decode() if isinstance(url, bytes) else url
        if text.startswith(self.prefix):
            text = self.target + text[len(self.prefix) :]
        verb = method.decode() if isinstance(method, bytes) else method
        return super().request(verb, text, *args, **kwargs)


class GraphAuth:
    """Client-credentials tokens for one app registration."""

    def __init__(self, tenant_id: str, client_id: str, secret: Secret, *, login_endpoint: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._secret = secret
        self._login_endpoint = login_endpoint
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = asyncio.Lock()

    def _acquire(self) -> Any:
        # msal discovers the tenant when the application is built, so build it here, off the event loop.
        if self._app is None:
            routed = RoutedSession(AUTHORITY_HOST, self._login_endpoint) if self._login_endpoint else None
            self._app = msal.ConfidentialClientApplication(
                self.client_id,
                client_credential=self._secret.reveal(),
                authority=f"{AUTHORITY_HOST}/{self.tenant_id}",
                http_client=routed,
            )
        return self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])

    async def token(self) -> str:
        """A valid access token (msal's cache, else a new one); ValueError with the AADSTS error otherwise."""
        async with self._lock:
            try:
                result = await asyncio.to_thread(self._acquire)
            except (requests.RequestException, ValueError) as error:
                raise ValueError(f"Entra ID token request failed: {type(error).__name__}") from None
        if not isinstance(result, dict) or "access_token" not in result:
            code = result.get("error") if isinstance(result, dict) else None
            detail = str(result.get("error_description") or "") if isinstance(result, dict) else ""
            first = detail.splitlines()[0][:200] if detail else ""
            raise ValueError(f"Entra ID refused the token request: {code}: {first}")
        return str(result["access_token"])
