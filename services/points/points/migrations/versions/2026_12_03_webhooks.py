"""Webhook events for every ledger movement, written by the database in the movement's own statement.

A trigger on `transactions` puts a `points.earned` (type earn), `points.redeemed` (redeem), `points.reversed`
(reverse) or `points.expired` (expire) event into the outbox, addressed to the gateway (consumer `gateway`,
see kit.webhooks): whatever path wrote the ledger (the SQL functions, the redemption's single statement on
a raw connection, an expiry batch), the event commits with it or not at all. Adjustments (corrections and
imported opening balances) send none. The payload is the transaction as `GET .../points/transactions` shows it.

Likewise `reward.redeemed`, from `reward_redemptions`: when a redemption is stored `pending` (an item) or
`fulfilled`, or when a coupon reward waiting for its code (`issuing`) becomes `fulfilled` with it.

Revision ID: points_webhooks
Revises: points_bounds_and_expiry
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "points_webhooks"
down_revision: str | None = "points_bounds_and_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(
        """
CREATE FUNCTION points_webhook_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid := gen_random_uuid();
    v_type varchar := CASE NEW.type WHEN 'earn' THEN 'points.earned' WHEN 'redeem' THEN 'points.redeemed'
                                    WHEN 'reverse' THEN 'points.reversed' WHEN 'expire' THEN 'points.expired' END;
BEGIN
    IF v_type IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO outbox_events (id, type, payload)
    VALUES (v_event, v_type, jsonb_build_object(
        'customer_id', NEW.customer_id,
        'transaction', jsonb_build_object(
            'id', NEW.id, 'type', NEW.type, 'points', NEW.points, 'balance_after', NEW.balance_after,
            'reference', NEW.reference, 'description', NEW.description, 'created_at', NEW.created_at)));
    INSERT INTO outbox_deliveries (event_id, consumer) VALUES (v_event, 'gateway');
    RETURN NULL;
END $$
"""
    )
    op.execute(
        "CREATE TRIGGER transactions_webhook_event AFTER INSERT ON transactions"
        " FOR EACH ROW EXECUTE FUNCTION points_webhook_event()"
    )

    op.execute(
        """
CREATE FUNCTION points_reward_webhook_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid := gen_random_uuid();
BEGIN
    INSERT INTO outbox_events (id, type, payload)
    VALUES (v_event, 'reward.redeemed', jsonb_build_object(
        'customer_id', NEW.customer_id,
        'redemption', jsonb_build_object(
            'redemption_id', NEW.id, 'reward_id', NEW.reward_id, 'points', NEW.points,
            'balance', NEW.balance_after, 'status', NEW.status, 'coupon_code', NEW.coupon_code)));
    INSERT INTO outbox_deliveries (event_id, consumer) VALUES (v_event, 'gateway');
    RETURN NULL;
END $$
"""
    )
    op.execute(
        "CREATE TRIGGER reward_redemptions_webhook_created AFTER INSERT ON reward_redemptions FOR EACH ROW"
        " WHEN (NEW.status IN ('pending', 'fulfilled')) EXECUTE FUNCTION points_reward_webhook_event()"
    )
    op.execute(
        "CREATE TRIGGER reward_redemptions_webhook_issued AFTER UPDATE OF status ON reward_redemptions FOR EACH ROW"
        " WHEN (OLD.status = 'issuing' AND NEW.status = 'fulfilled') EXECUTE FUNCTION points_reward_webhook_event()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER reward_redemptions_webhook_issued ON reward_redemptions")
    op.execute("DROP TRIGGER reward_redemptions_webhook_created ON reward_redemptions")
    op.execute("DROP FUNCTION points_reward_webhook_event()")
    op.execute("DROP TRIGGER transactions_webhook_event ON transactions")
    op.execute("DROP FUNCTION points_webhook_event()")
