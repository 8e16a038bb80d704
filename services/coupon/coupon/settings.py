from pydantic import Field

from kit.settings import ServiceSettings


class CouponSettings(ServiceSettings):
    port: int = Field(default=8001, validation_alias="COUPON_PORT")
    # Guess throttling: this many failed validations/redemptions (unknown code, wrong check character)
    # per caller within the window earn 429 until the oldest failure leaves the window.
    guess_limit: int = Field(default=20, validation_alias="COUPON_GUESS_LIMIT")
    guess_window_seconds: int = Field(default=600, validation_alias="COUPON_GUESS_WINDOW_SECONDS")
    # A format's code space divided by its live codes must stay at least 2^min_guess_bits.
    min_guess_bits: int = Field(default=40, validation_alias="COUPON_MIN_GUESS_BITS")
    # Counts up to this are generated inside the request (201); larger ones run as a background job (202).
    sync_codes_max: int = Field(default=10_000, validation_alias="COUPON_SYNC_CODES_MAX")
    code_batch_size: int = Field(default=100_000, validation_alias="COUPON_CODE_BATCH_SIZE")
    # where gift rules' `reward.gift_granted` events go (the points service grants the catalogue item)
    points_url: str = Field(default="http://127.0.0.1:8002", validation_alias="POINTS_URL")
