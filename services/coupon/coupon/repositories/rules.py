"""Surprise rules, their firings (one per rule and event key), and each customer's purchases counted once."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from coupon.repositories._rows import columns, typed
from kit.db import request_driver_connection


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: uuid.UUID
    campaign_id: uuid.UUID | None  # a rule grants a coupon of a campaign,
    reward_id: uuid.UUID | None  # or a catalogue item of the points service (a gift): exactly one
    trigger_type: str
    n: int | None
    amount: Decimal | None
    currency: str | None
    active: bool
    created_at: datetime


RULE_COLUMNS = columns(RuleRow)

_INSERT = text(
    f"""
    INSERT INTO coupon_rules (id, campaign_id, reward_id, trigger_type, n, amount, currency)
    VALUES (:id, :campaign_id, :reward_id, :trigger_type, :n, :amount, :currency) RETURNING {RULE_COLUMNS}
    """
)


async def insert(
    session: AsyncSession,
    *,
    campaign_id: uuid.UUID | None,
    reward_id: uuid.UUID | None,
    trigger_type: str,
    n: int | None,
    amount: Decimal | None,
    currency: str | None,
) -> RuleRow:
    params = {
        "id": uuid.uuid4(),
        "campaign_id": campaign_id,
        "reward_id": reward_id,
        "trigger_type": trigger_type,
        "n": n,
        "amount": amount,
        "currency": currency,
    }
    return typed(RuleRow, (await session.execute(_INSERT, params)).one())


_GET = text(f"SELECT {RULE_COLUMNS} FROM coupon_rules WHERE id = :id")


async def get(session: AsyncSession, rule_id: uuid.UUID) -> RuleRow | None:
    row = (await session.execute(_GET, {"id": rule_id})).first()
    return None if row is None else typed(RuleRow, row)


_PAGE = text(
    f"""
    SELECT {RULE_COLUMNS} FROM coupon_rules
     WHERE CAST(:after_at AS timestamptz) IS NULL OR (created_at, id) > (:after_at, CAST(:after_id AS uuid))
     ORDER BY created_at, id LIMIT :limit
    """
)


async def page(session: AsyncSession, after: tuple[datetime, uuid.UUID] | None, limit: int) -> list[RuleRow]:
    """Rules in creation order after the key `after` (created_at, id)."""
    after_at, after_id = after or (None, None)
    rows = await session.execute(_PAGE, {"after_at": after_at, "after_id": after_id, "limit": limit})
    return [typed(RuleRow, row) for row in rows]


_SET_ACTIVE = text(f"UPDATE coupon_rules SET active = :active WHERE id = :id RETURNING {RULE_COLUMNS}")


async def set_active(session: AsyncSession, rule_id: uuid.UUID, active: bool) -> RuleRow | None:
    row = (await session.execute(_SET_ACTIVE, {"id": rule_id, "active": active})).first()
    return None if row is None else typed(RuleRow, row)


_ACTIVE = text(
    f"SELECT {RULE_COLUMNS} FROM coupon_rules WHERE active AND trigger_type = ANY(:types) ORDER BY created_at, id"
)


async def active(session: AsyncSession, trigger_types: Sequence[str]) -> list[RuleRow]:
    """The active rules of these triggers, oldest first (the order they fire in)."""
    return [typed(RuleRow, row) for row in await session.execute(_ACTIVE, {"types": list(trigger_types)})]


_OF_KIND = {
    "coupon": text("SELECT EXISTS (SELECT 1 FROM coupon_rules WHERE id = :id AND campaign_id IS NOT NULL)"),
    "gift": text("SELECT EXISTS (SELECT 1 FROM coupon_rules WHERE id = :id AND reward_id IS NOT NULL)"),
}


async def exists(session: AsyncSession, rule_id: uuid.UUID, kind: Literal["coupon", "gift"]) -> bool:
    """Whether a rule of this id grants a coupon (`coupon`) or a catalogue item (`gift`)."""
    return bool((await session.execute(_OF_KIND[kind], {"id": rule_id})).scalar())


_FIRE = text(
    "INSERT INTO rule_firings (rule_id, event_key, customer_id) VALUES (:rule, :key, :customer) "
    "ON CONFLICT DO NOTHING RETURNING rule_id"
)
_FIRED_CODE = text("UPDATE rule_firings SET code = :code WHERE rule_id = :rule AND event_key = :key")


async def record_firing(session: AsyncSession, rule_id: uuid.UUID, event_key: str, customer_id: str) -> bool:
    """Record that the rule fires for this event; False when it had fired for it already."""
    params = {"rule": rule_id, "key": event_key, "customer": customer_id}
    return (await session.execute(_FIRE, params)).first() is not None


async def record_fired_code(session: AsyncSession, rule_id: uuid.UUID, event_key: str, code: str) -> None:
    await session.execute(_FIRED_CODE, {"rule": rule_id, "key": event_key, "code": code})


_SEEN = """
    INSERT INTO purchases_seen (purchase_id, customer_id, ordinal)
    SELECT p, c, 0 FROM unnest($1::varchar[], $2::varchar[]) AS t (p, c)
    ON CONFLICT DO NOTHING
    RETURNING purchase_id
"""
# the counter rows serialise one customer's concurrent purchases: each gets its own ordinal (sorted: concurrent
# runs lock them in one order)
_COUNT = """
    INSERT INTO customer_purchase_counts AS n (customer_id, purchases)
    SELECT * FROM unnest($1::varchar[], $2::int[])
    ON CONFLICT (customer_id) DO UPDATE SET purchases = n.purchases + excluded.purchases
    RETURNING customer_id, purchases
"""
_ORDINALS = """
    UPDATE purchases_seen AS s SET ordinal = u.o FROM unnest($1::varchar[], $2::int[]) AS u (p, o)
     WHERE s.purchase_id = u.p
"""


async def first_seen(session: AsyncSession, purchases: Sequence[tuple[str, str]]) -> set[str]:
    """Record these (purchase id, customer id) pairs; answers the purchase ids not seen before."""
    connection = await request_driver_connection(session)
    rows = await connection.fetch(_SEEN, [p for p, _ in purchases], [c for _, c in purchases])
    return {row[0] for row in rows}


async def count_purchases(session: AsyncSession, new_purchases: dict[str, int]) -> dict[str, int]:
    """Add each customer's new purchases to their count; answers the counts after."""
    connection = await request_driver_connection(session)
    customers = sorted(new_purchases)
    rows = await connection.fetch(_COUNT, customers, [new_purchases[c] for c in customers])
    return {customer: int(purchases) for customer, purchases in rows}


async def set_ordinals(session: AsyncSession, ordinals: dict[str, int]) -> None:
    """Each purchase's place in its customer's purchases."""
    connection = await request_driver_connection(session)
    await connection.execute(_ORDINALS, list(ordinals), list(ordinals.values()))
