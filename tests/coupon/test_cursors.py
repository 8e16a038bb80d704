"""Every coupon list answers a forged cursor with 422 problem+json on `cursor`, never a database error."""

import base64
import json
from typing import Any

import httpx
import pytest

from tests.coupon.helpers import create_campaign, issue, uid

WHEN = "2026-01-01T00:00:00+00:00"
ID = "5b0d8a4e-0000-4000-8000-000000000000"

# Each a cursor this list never returned: not base64 or JSON, not a list, the wrong length, the wrong types, a time
# without a zone or outside what PostgreSQL stores, an integer past 64 bits. None is any list's sort key
# (campaigns and rules: time, id; codes: sequence number; the wallet: time, code).
FORGED: list[Any] = [
    "garbage!",
    base64.urlsafe_b64encode(b"{not json").decode(),
    [],
    {"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()},
    [WHEN, ID, 3],
    [True, False],
    [1.5, ID],
    [None, None],
    ["2026-01-01T00:00:00", ID],
    ["0001-01-01T00:00:00+05:00", ID],
    ["9999-12-31T23:59:59-05:00", ID],
    ["x" * 300, ID],
    [2**70],
    ["1"],
    [True],
]


def _cursor(forged: Any) -> str:
    if isinstance(forged, str):
        return forged
    if isinstance(forged, dict):
        return str(forged["cursor"])
    # the standard library's JSON, which writes integers past 64 bits (orjson, the kit's, refuses them)
    return base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")


async def _lists(coupon: httpx.AsyncClient) -> list[str]:
    campaign = await create_campaign(coupon)
    customer = uid("c-")
    await issue(coupon, campaign["id"], customer)
    return [
        "/v1/coupon-campaigns",
        f"/v1/coupon-campaigns/{campaign['id']}/codes",
        f"/v1/customers/{customer}/coupons",
        "/v1/coupon-rules",
    ]


@pytest.mark.parametrize("forged", FORGED, ids=[str(i) for i in range(len(FORGED))])
async def test_forged_cursor_is_422(coupon: httpx.AsyncClient, forged: Any) -> None:
    cursor = _cursor(forged)
    for path in await _lists(coupon):
        answer = await coupon.get(path, params={"cursor": cursor})
        assert answer.status_code == 422, (path, forged, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.json()["errors"]] == ["cursor"], answer.text
