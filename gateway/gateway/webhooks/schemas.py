from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints, field_validator

from kit.types import StrictModel
from kit.webhooks import EventType

WebhookUrl = Annotated[str, StringConstraints(min_length=8, max_length=2048, strip_whitespace=True)]
Description = Annotated[str, StringConstraints(max_length=500)]
EventList = Annotated[list[EventType], Field(min_length=1, max_length=64)]
DeliveryStatus = Literal["pending", "delivered", "failed"]


def _distinct(events: list[str] | None) -> list[str] | None:
    return None if events is None else sorted(set(events))


class WebhookEndpointCreate(StrictModel):
    url: WebhookUrl = Field(description="http(s) URL of a public address (unless WEBHOOK_ALLOW_PRIVATE=true).")
    events: EventList
    description: Description = ""

    _events = field_validator("events")(_distinct)


class WebhookEndpointUpdate(StrictModel):
    url: WebhookUrl | None = None
    events: EventList | None = None
    description: Description | None = None
    active: bool | None = Field(default=None, description="true re-enables an endpoint that was disabled.")

    _events = field_validator("events")(_distinct)


class WebhookEndpoint(BaseModel):
    id: UUID
    url: str
    events: list[str]
    description: str
    active: bool
    disabled_at: datetime | None = Field(description="When deliveries stopped: set by PATCH or by failing for days.")
    disabled_reason: str | None
    failing_since: datetime | None = Field(description="First failure since the last success, if any.")
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation, the old secret signs alongside the new one until then."
    )
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpoint):
    secret: str = Field(description="`whsec_...`: shown only in this response.")


class WebhookSecret(BaseModel):
    endpoint_id: UUID
    secret: str = Field(description="The new `whsec_...` secret: shown only in this response.")
    previous_secret_expires_at: datetime


class WebhookAttempt(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None


class WebhookDelivery(BaseModel):
    id: int
    endpoint_id: UUID
    message_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    attempt_log: list[WebhookAttempt] = Field(description="Every attempt, oldest first.")
