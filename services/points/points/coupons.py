"""The points service's client of the coupon service, for coupon rewards.

The coupon service keeps one row per issuance key (the redemption id): the first `issue` with a key assigns a
code, and every later `issue` or `void` with it answers that code; a `void` that comes first records the key
as voided, and every later call answers `voided`. Either answer is final, so the two services can never
disagree about a redemption, whatever fails in between. `None` means no answer (down, timed out, 5xx).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import structlog

from kit.client import UpstreamError, Upstreams

log = structlog.get_logger("points.coupons")

ISSUANCES = "/internal/reward-issuances"

COUPON = "coupon"


@dataclass(frozen=True)
class IssueAnswer:
    status: Literal["issued", "voided", "refused"]
    code: str | None = None
    reason: str | None = None


class CouponClient:
    def __init__(self, base_url: str, internal_token: str, timeout: float) -> None:
        self._client = Upstreams(
            {COUPON: base_url}, timeout=timeout, connect_timeout=min(1.0, timeout), internal_token=internal_token
        )

    async def _answer(self, method: str, path: str, body: dict[str, str] | None = None) -> IssueAnswer | None:
        try:
            response = await self._client.call(COUPON, method, path, json=body)
        except UpstreamError as exc:
            log.warning("points.coupon.unreachable", error=str(exc)[:200])
            return None
        if response.status != 200:
            log.warning("points.coupon.failed", status=response.status, body=response.text[:300])
            return None
        try:
            data = response.json()
            status = data["status"]
        except (ValueError, KeyError, TypeError):
            return None
        if status not in ("issued", "voided", "refused"):
            # anything else is no answer: only a known, final one may settle a redemption
            log.error("points.coupon.unexpected_answer", body=response.text[:300])
            return None
        return IssueAnswer(status=status, code=data.get("code"), reason=data.get("reason"))

    async def issue(self, key: uuid.UUID, campaign_id: uuid.UUID, customer_id: str) -> IssueAnswer | None:
        return await self._answer(
            "POST", ISSUANCES, {"key": str(key), "campaign_id": str(campaign_id), "customer_id": customer_id}
        )

    async def void(self, key: uuid.UUID) -> IssueAnswer | None:
        return await self._answer("POST", f"{ISSUANCES}/{key}/void")

    async def campaign_exists(self, campaign_id: uuid.UUID) -> bool | None:
        """None when the coupon service did not answer."""
        try:
            response = await self._client.call(COUPON, "GET", f"/v1/coupon-campaigns/{campaign_id}")
        except UpstreamError:
            return None
        if response.status in (200, 404):
            return response.status == 200
        return None

    async def aclose(self) -> None:
        await self._client.aclose()
