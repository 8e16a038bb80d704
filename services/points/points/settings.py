from pydantic import Field

from kit.settings import ServiceSettings


class PointsSettings(ServiceSettings):
    port: int = Field(default=8002, validation_alias="POINTS_PORT")
    # how often the service expires due lots on its own (POST /v1/points/expiry-runs runs one at once)
    expiry_interval_seconds: float = Field(default=3600.0, gt=0, validation_alias="POINTS_EXPIRY_INTERVAL_SECONDS")
    # coupon rewards: where the coupon service is, how long a redemption waits for its code before answering 202
    # (the code then comes from the retry job), and after how long an unissued code is voided and the points
    # given back instead (docs/rewards.md)
    coupon_url: str = Field(default="http://127.0.0.1:8001", validation_alias="COUPON_URL")
    coupon_timeout_seconds: float = Field(default=5.0, gt=0, validation_alias="POINTS_COUPON_TIMEOUT_SECONDS")
    reward_issue_deadline_seconds: float = Field(
        default=600.0, gt=0, validation_alias="POINTS_REWARD_ISSUE_DEADLINE_SECONDS"
    )
    reward_retry_interval_seconds: float = Field(
        default=2.0, gt=0, validation_alias="POINTS_REWARD_RETRY_INTERVAL_SECONDS"
    )
    reward_retry_max_delay_seconds: float = Field(
        default=60.0, gt=0, validation_alias="POINTS_REWARD_RETRY_MAX_DELAY_SECONDS"
    )
