"""What the HTTP channels (SMS, push) share: one client, and checked replies."""

from __future__ import annotations

from typing import Any

import httpx

from recoveryd.notifiers import DeliveryError

__all__ = ["new_client", "post"]


def new_client(timeout_s: float) -> httpx.AsyncClient:
    """A client that never follows redirects: a provider's URL is the only target."""
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)


async def post(
    client: httpx.AsyncClient,
    who: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    auth: httpx.Auth | None = None,
    data: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
) -> httpx.Response:
    """POST and raise `DeliveryError` for a transport error or a non-2xx reply."""
    try:
        reply = await client.post(
            url,
            headers=headers,
            auth=auth or httpx.USE_CLIENT_DEFAULT,
            data=data,
            json=json,
            content=content,
        )
    except httpx.HTTPError as exc:
        # httpx names the URL, never the headers, so no token reaches the text.
        raise DeliveryError(f"{who}: {type(exc).__name__}: {exc}") from None
    if not reply.is_success:
        # The reply's body is not quoted: a provider may echo the request.
        raise DeliveryError(f"{who}: the provider answered {reply.status_code}")
    return reply
