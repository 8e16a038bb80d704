"""Debits (reversals of refunded purchases, negative adjustments) expire due lots first, as redemptions do.

Without it a debit could take its points from a lot already past its `expires_at` that the expiry job had not yet
reached: points that were worth nothing would pay a refund's reversal, and the customer would keep points from
the lots that are still good (a refund after expiry left them richer than an expiry run before it). The block is
migration points_bounds_and_expiry's `EXPIRE_DUE_LOTS`, placed after the replay check as in `points_redeem`.

Revision ID: points_debit_expires_first
Revises: points_pending_redemptions
Create Date: 2026-12-03
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "points_debit_expires_first"
down_revision: str | None = "points_pending_redemptions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _bounds_migration() -> ModuleType:
    path = Path(__file__).with_name("2026_12_03_points_bounds_and_expiry.py")
    spec = importlib.util.spec_from_file_location("points_bounds_and_expiry", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _debit_function() -> tuple[str, str]:
    """`points_debit` as points_bounds_and_expiry created it, and with due lots expired first."""
    bounds = _bounds_migration()
    (debit,) = [s for s in bounds.FUNCTIONS.strip().split("\n\n") if "FUNCTION points_debit(" in s]
    assert bounds.REPLAY_CHECKED in debit, "points_debit changed: place EXPIRE_DUE_LOTS anew"
    return debit, debit.replace(bounds.REPLAY_CHECKED, bounds.REPLAY_CHECKED + bounds.EXPIRE_DUE_LOTS, 1)


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(_debit_function()[1])


def downgrade() -> None:
    op.execute(_debit_function()[0])
