from pydantic import Field

from kit.settings import ServiceSettings


class CouponSettings(ServiceSettings):
    port: int = Field(default=8001, validation_alias="COUPON_PORT")
