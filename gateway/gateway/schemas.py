from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
    with_config,
)

from gateway.principals import SCOPES, Scope
from kit import contracts
from kit.types import Currency, Email, Identifier, Money, StrictModel, check_money


class ApiKeyCreate(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(SCOPES))]

    @field_validator("scopes")
    @classmethod
    def _distinct(cls, scopes: list[str]) -> list[str]:
        return sorted(set(scopes))


class ApiKey(BaseModel):
    id: UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKey):
    key: str = Field(description="The secret key. Shown only in this response.")


MAX_TOKEN_TTL_SECONDS = 30 * 24 * 3600


class CustomerTokenCreate(StrictModel):
    customer_id: Identifier
    ttl_seconds: Annotated[
        int,
        Field(
            ge=60,
            le=MAX_TOKEN_TTL_SECONDS,
            strict=True,
            description="At most CUSTOMER_TOKEN_MAX_TTL_SECONDS (a setting, one day by default).",
        ),
    ] = 3600


class CustomerToken(BaseModel):
    token: str
    token_id: str = Field(description="The token's `jti`: name it to revoke this token alone.")
    expires_at: datetime


class CustomerTokenRevocationCreate(StrictModel):
    customer_id: Identifier
    token_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = Field(
        default=None, description="Revoke this token only; omit to revoke every token issued to the customer so far."
    )


class CustomerTokenRevocation(BaseModel):
    customer_id: str
    token_id: str | None
    revoked_at: datetime


# The event contract's item (a TypedDict: an imported file carries about twenty items a purchase, and validating
# them into dicts costs a third of building a model for each, docs/benchmarks.md "History import"), refusing
# unknown fields as every request body does.
@with_config(ConfigDict(extra="forbid"))
class PurchaseItem(contracts.PurchaseItem):
    pass


class PurchaseCreate(StrictModel):
    purchase_id: Identifier
    customer_id: Identifier
    email: Email | None = None
    occurred_at: AwareDatetime
    currency: Currency
    total: Money
    items: Annotated[list[PurchaseItem], Field(min_length=1, max_length=1000)]

    @model_validator(mode="after")
    def _money_fits_the_currency(self) -> "PurchaseCreate":
        check_money(self.total, self.currency)
        for item in self.items:
            check_money(item["unit_price"], self.currency)
        return self


class PurchaseAccepted(BaseModel):
    purchase_id: str
    status: Literal["accepted"] = "accepted"


DeliveryState = Literal["pending", "delivered", "failed"]


class RefundSummary(BaseModel):
    refund_id: str
    amount: Decimal
    deliveries: dict[str, DeliveryState]


class Purchase(BaseModel):
    purchase_id: str
    customer_id: str
    total: Decimal
    currency: str
    occurred_at: datetime
    deliveries: dict[str, DeliveryState]
    refunds: list[RefundSummary]


class RefundCreate(StrictModel):
    refund_id: Identifier
    amount: Money | None = Field(default=None, description="Omit for a full refund.")


class RefundAccepted(BaseModel):
    refund_id: str
    purchase_id: str
    amount: Decimal
    status: Literal["accepted"] = "accepted"


class PointsSummary(BaseModel):
    balance: int
    tier: str | None
    next_expiry: dict[str, Any] | None


class SurveysSummary(BaseModel):
    pending: list[dict[str, Any]]


class ClosestReward(BaseModel):
    id: UUID
    name: str
    kind: str
    cost_points: int
    points_needed: int = Field(description="Points still missing: what makes the next purchase worth it.")
    image_url: str | None


class CustomerOverview(BaseModel):
    customer_id: str
    points: PointsSummary | None
    rewards: list[ClosestReward] | None = Field(
        default=None, description="Up to 3 rewards the customer may redeem but cannot afford yet, closest first."
    )
    coupons: list[dict[str, Any]] | None
    recommendations: list[dict[str, Any]] | None
    surveys: SurveysSummary | None
    unavailable: list[str]


class Delivery(BaseModel):
    id: int
    event_id: UUID
    event_type: str
    consumer: str
    status: DeliveryState
    attempts: int
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
