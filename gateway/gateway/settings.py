from pydantic import Field, field_validator

from kit.settings import ServiceSettings, require_secret


class GatewaySettings(ServiceSettings):
    port: int = Field(default=8000, validation_alias="GATEWAY_PORT")
    admin_key: str = Field(validation_alias="LOYALTY_ADMIN_KEY")
    jwt_secret: str = Field(validation_alias="LOYALTY_JWT_SECRET")
    coupon_url: str = Field(default="http://127.0.0.1:8001", validation_alias="COUPON_URL")
    points_url: str = Field(default="http://127.0.0.1:8002", validation_alias="POINTS_URL")
    recommend_url: str = Field(default="http://127.0.0.1:8003", validation_alias="RECOMMEND_URL")
    survey_url: str = Field(default="http://127.0.0.1:8004", validation_alias="SURVEY_URL")
    upstream_timeout_seconds: float = Field(default=10.0, validation_alias="UPSTREAM_TIMEOUT_SECONDS")
    # imports of up to 10,000 lines a call (BodyClass.BULK routes) take longer than one request
    upstream_bulk_timeout_seconds: float = Field(default=300.0, gt=0, validation_alias="UPSTREAM_BULK_TIMEOUT_SECONDS")
    upstream_connect_timeout_seconds: float = Field(default=1.0, validation_alias="UPSTREAM_CONNECT_TIMEOUT_SECONDS")
    overview_budget_ms: int = Field(default=300, validation_alias="OVERVIEW_BUDGET_MS")
    # the overview's read model (gateway/overview.py): the longest a stored part is served without an event
    # saying it changed, and how often the refresher fetches the parts events made stale
    overview_max_age_seconds: float = Field(default=900.0, gt=0, validation_alias="OVERVIEW_MAX_AGE_SECONDS")
    overview_refresh_seconds: float = Field(default=0.1, gt=0, validation_alias="OVERVIEW_REFRESH_SECONDS")
    rate_limit_partner_per_minute: int = Field(default=60_000, ge=1, validation_alias="RATE_LIMIT_PARTNER_PER_MINUTE")
    rate_limit_customer_per_minute: int = Field(default=600, ge=1, validation_alias="RATE_LIMIT_CUSTOMER_PER_MINUTE")
    api_key_cache_seconds: float = Field(default=10.0, validation_alias="API_KEY_CACHE_SECONDS")
    # The front door's limits (docs/operations.md, "Security").
    rate_limit_public_per_minute: int = Field(default=120, ge=1, validation_alias="RATE_LIMIT_PUBLIC_PER_MINUTE")
    failed_auth_per_minute: int = Field(default=30, ge=1, validation_alias="FAILED_AUTH_PER_MINUTE")
    rate_limit_max_keys: int = Field(default=100_000, ge=100, validation_alias="RATE_LIMIT_MAX_KEYS")
    auth_cache_max_entries: int = Field(default=10_000, ge=100, validation_alias="AUTH_CACHE_MAX_ENTRIES")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, validation_alias="MAX_HEADER_BYTES")
    upstream_max_concurrency: int = Field(default=256, ge=1, validation_alias="UPSTREAM_MAX_CONCURRENCY")
    upstream_queue_seconds: float = Field(default=5.0, gt=0, validation_alias="UPSTREAM_QUEUE_SECONDS")
    customer_token_max_ttl_seconds: int = Field(
        default=24 * 3600, ge=60, le=30 * 24 * 3600, validation_alias="CUSTOMER_TOKEN_MAX_TTL_SECONDS"
    )
    token_revocation_cache_seconds: float = Field(
        default=5.0, ge=0, le=60, validation_alias="TOKEN_REVOCATION_CACHE_SECONDS"
    )
    # Webhooks (docs/webhooks.md)
    webhook_allow_private: bool = Field(default=False, validation_alias="WEBHOOK_ALLOW_PRIVATE")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60, validation_alias="WEBHOOK_TIMEOUT_SECONDS")
    webhook_retry_hours: float = Field(default=24.0, gt=0, validation_alias="WEBHOOK_RETRY_HOURS")
    webhook_backoff_base_seconds: float = Field(default=5.0, gt=0, validation_alias="WEBHOOK_BACKOFF_BASE_SECONDS")
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0, validation_alias="WEBHOOK_BACKOFF_MAX_SECONDS")
    webhook_disable_after_hours: float = Field(default=120.0, gt=0, validation_alias="WEBHOOK_DISABLE_AFTER_HOURS")
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0, validation_alias="WEBHOOK_SECRET_OVERLAP_HOURS")
    webhook_poll_seconds: float = Field(default=0.25, gt=0, validation_alias="WEBHOOK_POLL_SECONDS")
    webhook_per_endpoint_concurrency: int = Field(default=16, ge=1, le=256, validation_alias="WEBHOOK_PER_ENDPOINT")
    webhook_max_in_flight: int = Field(default=512, ge=1, validation_alias="WEBHOOK_MAX_IN_FLIGHT")
    # The console (docs/console.md): a session ends after this long idle, and at the latest after the second.
    console_idle_seconds: int = Field(default=30 * 60, ge=60, validation_alias="CONSOLE_IDLE_SECONDS")
    console_session_seconds: int = Field(default=12 * 3600, ge=300, validation_alias="CONSOLE_SESSION_SECONDS")

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, value: str) -> str:
        return require_secret(value, "LOYALTY_ADMIN_KEY")

    @field_validator("jwt_secret")
    @classmethod
    def _jwt_secret(cls, value: str) -> str:
        return require_secret(value, "LOYALTY_JWT_SECRET")

    @property
    def upstreams(self) -> dict[str, str]:
        return {
            "coupon": self.coupon_url,
            "points": self.points_url,
            "recommend": self.recommend_url,
            "survey": self.survey_url,
        }
