"""Settings read from the environment (and `.env`) under the names in the public contract.

Every process reads `DATABASE_URL`, `LOYALTY_INTERNAL_TOKEN`, `LOG_LEVEL` and `LOG_FORMAT`; each service adds
its own port and whatever else it needs by subclassing :class:`ServiceSettings`.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ProcessRole", "ServiceSettings", "asyncpg_url", "require_secret"]

# `api` serves requests only, `worker` runs the background work only (health and metrics aside), `all` both.
ProcessRole = Literal["all", "api", "worker"]

MIN_SECRET_LENGTH = 16


def require_secret(value: str, name: str) -> str:
    """Refuse empty or short secrets: a guessable internal token or JWT secret opens every service."""
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(f"{name} must be set to a random value of at least {MIN_SECRET_LENGTH} characters")
    return value


def asyncpg_url(url: str) -> str:
    """Accept the usual `postgresql://` / `postgres://` spellings and select the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = Field(validation_alias="DATABASE_URL")
    # Where migrations and session-bound work connect when DATABASE_URL is PgBouncer in transaction mode; being
    # set is what tells this process that DATABASE_URL is such a pooler (docs/operations.md, "PgBouncer").
    database_direct_url: str | None = Field(default=None, validation_alias="DATABASE_DIRECT_URL")
    process_role: ProcessRole = Field(default="all", validation_alias="PROCESS_ROLE")
    # Shared rate limits, guess throttles and revocations across replicas; unset: each process keeps its own.
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    internal_token: str = Field(validation_alias="LOYALTY_INTERNAL_TOKEN")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["json", "console"] = Field(default="console", validation_alias="LOG_FORMAT")
    public_base_url: str = Field(default="http://127.0.0.1:8000", validation_alias="PUBLIC_BASE_URL")
    db_pool_size: int = Field(default=20, ge=1, validation_alias="DB_POOL_SIZE")
    migrate_on_start: bool = Field(default=True, validation_alias="MIGRATE_ON_START")
    outbox_poll_seconds: float = Field(default=0.5, validation_alias="OUTBOX_POLL_SECONDS")
    outbox_max_attempts: int = Field(default=12, ge=1, validation_alias="OUTBOX_MAX_ATTEMPTS")
    outbox_base_delay_seconds: float = Field(default=1.0, gt=0, validation_alias="OUTBOX_BASE_DELAY_SECONDS")
    outbox_max_delay_seconds: float = Field(default=300.0, gt=0, validation_alias="OUTBOX_MAX_DELAY_SECONDS")
    outbox_timeout_seconds: float = Field(default=5.0, gt=0, validation_alias="OUTBOX_TIMEOUT_SECONDS")
    # a purchase older than this when it arrives (an imported one) wakes no customer: kit.purchases
    recent_purchase_hours: float = Field(default=72.0, gt=0, validation_alias="RECENT_PURCHASE_HOURS")
    # Where a service's outbox sends the events the gateway consumes (webhooks, experiment rewards), inside the
    # deployment.
    # Unset: the gateway on this machine, at GATEWAY_PORT.
    gateway_url: str = Field(default="", validation_alias="GATEWAY_URL")

    @model_validator(mode="after")
    def _gateway_url(self) -> ServiceSettings:
        if not self.gateway_url:
            self.gateway_url = f"http://127.0.0.1:{os.environ.get('GATEWAY_PORT', '8000')}"
        return self

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return asyncpg_url(value)

    @field_validator("database_direct_url", "redis_url")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("database_direct_url")
    @classmethod
    def _database_direct_url(cls, value: str | None) -> str | None:
        return asyncpg_url(value) if value else None

    @property
    def behind_pooler(self) -> bool:
        """DATABASE_URL is a transaction-mode pooler: no session state survives a transaction there."""
        return self.database_direct_url is not None

    @property
    def migration_url(self) -> str:
        return self.database_direct_url or self.database_url

    @property
    def serves_api(self) -> bool:
        return self.process_role in ("all", "api")

    @property
    def runs_background(self) -> bool:
        return self.process_role in ("all", "worker")

    @field_validator("internal_token")
    @classmethod
    def _internal_token(cls, value: str) -> str:
        return require_secret(value, "LOYALTY_INTERNAL_TOKEN")
