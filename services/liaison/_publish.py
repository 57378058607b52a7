"""Publishing acknowledgements and answers: through the agency's own gateway, never around it.

The liaison service holds no signing key. What an officer sends is a report
like any other, so it goes through the one publishing path the agency has:
``POST /v1/reports`` of its gateway, which validates it, signs it with the
agency's key and routes it as the agreement says. The gateway's refusal
(a field, a releasability the agreement does not allow) comes back to the
officer as it is.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson

from services.bus import FieldIssue, get_logger
from services.liaison._errors import PublishingError

log = get_logger(__name__)


class GatewayClient:
    """The agency's gateway, as a client with a bearer token."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def publish(self, report: dict[str, Any]) -> dict[str, Any]:
        """Publish ``report`` (JSON, its header's message id set); the gateway's 201 body.

        A retry after a lost answer is safe: the gateway answers a message id
        it already accepted with the first answer.

        Raises:
            PublishingError: the gateway refused (its status and field issues), or is down (503).
        """
        message_id = report["header"]["message_id"]
        for attempt in (1, 2):
            try:
                response = await self._http.post(
                    "/v1/reports",
                    content=orjson.dumps(report),
                    headers={"Content-Type": "application/json"},
                )
            except httpx.TransportError as exc:
                if attempt == 1:
                    continue
                raise PublishingError(
                    503, f"the agency's gateway at {self.url} cannot be reached: {exc!r}"
                ) from exc
            break
        if response.status_code == 201:  # noqa: PLR2004
            body: dict[str, Any] = response.json()
            log.info("published through the gateway", message_id=message_id, type=report["type"])
            return body
        raise _refusal(response)

    async def status(self, message_id: str) -> dict[str, Any] | None:
        """The gateway's status of a message it published (None: not one of its messages)."""
        try:
            canonical = str(uuid.UUID(message_id))
            response = await self._http.get(f"/v1/reports/{canonical}/status")
        except (ValueError, httpx.TransportError):
            return None
        if response.status_code != 200:  # noqa: PLR2004
            return None
        body: dict[str, Any] = response.json()
        return body


def _refusal(response: httpx.Response) -> PublishingError:
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    detail = problem.get("detail") if isinstance(problem, dict) else None
    issues = [
        FieldIssue(str(item.get("path", "")), str(item.get("reason", "")))
        for item in (problem.get("issues") or [] if isinstance(problem, dict) else [])
        if isinstance(item, dict)
    ]
    status = response.status_code
    if status in {401, 403}:
        # The liaison's own token is at fault: a server-side problem for the officer.
        return PublishingError(
            502, f"the agency's gateway refused the liaison service's token: {detail}"
        )
    if status >= 500:  # noqa: PLR2004
        return PublishingError(503, f"the agency's gateway could not publish now: {detail}")
    return PublishingError(
        status if status in {409, 422} else 422, f"the gateway refused: {detail}", issues
    )
