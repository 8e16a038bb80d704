import ipaddress
from pathlib import Path

from pydantic import Field

from kit.settings import ServiceSettings


class SurveySettings(ServiceSettings):
    port: int = Field(default=8004, validation_alias="SURVEY_PORT")
    points_url: str = Field(default="http://127.0.0.1:8002", validation_alias="POINTS_URL")
    coupon_url: str = Field(default="http://127.0.0.1:8001", validation_alias="COUPON_URL")
    # detractor ratings of a purchase and preference answers go to the recommender
    recommend_url: str = Field(default="http://127.0.0.1:8003", validation_alias="RECOMMEND_URL")

    smtp_host: str | None = Field(default=None, validation_alias="SMTP_HOST")
    smtp_port: int = Field(default=25, validation_alias="SMTP_PORT")
    smtp_username: str | None = Field(default=None, validation_alias="SMTP_USERNAME")
    smtp_password: str | None = Field(default=None, validation_alias="SMTP_PASSWORD")
    smtp_from: str = Field(default="surveys@reciprocity.local", validation_alias="SMTP_FROM")
    # unset: on for any SMTP_HOST but a loopback one (credentials and live survey links cross the network)
    smtp_starttls: bool | None = Field(default=None, validation_alias="SMTP_STARTTLS")
    smtp_timeout_seconds: float = Field(default=10.0, validation_alias="SMTP_TIMEOUT_SECONDS")
    mail_dir: Path = Field(default=Path(".data/mail"), validation_alias="MAIL_DIR")

    # The background sender: how often it looks, how much it takes at once, how long a claim lasts.
    mail_poll_seconds: float = Field(default=0.2, validation_alias="MAIL_POLL_SECONDS")
    mail_batch_size: int = Field(default=200, ge=1, le=5000, validation_alias="MAIL_BATCH_SIZE")
    mail_connections: int = Field(default=4, ge=1, le=32, validation_alias="MAIL_CONNECTIONS")
    mail_lease_seconds: float = Field(default=120.0, gt=0, validation_alias="MAIL_LEASE_SECONDS")
    mail_max_attempts: int = Field(default=8, ge=1, validation_alias="MAIL_MAX_ATTEMPTS")
    mail_retry_base_seconds: float = Field(default=30.0, gt=0, validation_alias="MAIL_RETRY_BASE_SECONDS")
    mail_retry_max_seconds: float = Field(default=3600.0, gt=0, validation_alias="MAIL_RETRY_MAX_SECONDS")

    invitation_ttl_days: int = Field(default=30, ge=1, validation_alias="SURVEY_INVITATION_TTL_DAYS")
    # Invitations a partner (or customer) caller may send per UTC day; admin and internal callers are not counted.
    send_quota_per_day: int = Field(default=10_000, ge=0, validation_alias="SURVEY_SEND_QUOTA_PER_DAY")
    post_purchase_delay_seconds: float = Field(
        default=86_400, ge=0, validation_alias="POST_PURCHASE_SURVEY_DELAY_SECONDS"
    )

    @property
    def use_starttls(self) -> bool:
        if self.smtp_starttls is not None:
            return self.smtp_starttls
        return self.smtp_host is not None and not is_loopback(self.smtp_host)


def is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
