from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints, field_validator

from gateway.principals import SCOPES
from kit.types import Identifier, StrictModel


class ApiKeyCreate(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
    scopes: Annotated[list[str], Field(min_length=1, max_length=len(SCOPES))]

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(unknown)}; known: {', '.join(sorted(SCOPES))}")
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


class CustomerTokenCreate(StrictModel):
    customer_id: Identifier
    ttl_seconds: Annotated[int, Field(ge=60, le=30 * 24 * 3600, strict=True)] = 3600


class CustomerToken(BaseModel):
    token: str
    expires_at: datetime
