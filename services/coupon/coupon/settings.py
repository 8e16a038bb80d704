from pydantic import Field

from kit.settings import ServiceSettings


class CouponSettings(ServiceSettings):
    port: int = Field(default=8001, validation_alias="COUPON_PORT")
    # Guess throttling (coupon.guards): failed validations/redemptions (unknown code, wrong check character)
    # per (caller, customer) within the window are answered 429 past COUPON_GUESS_LIMIT (a valid code still
    # works); past COUPON_GUESS_CALLER_LIMIT per caller, every coupon call of that caller is 429.
    guess_limit: int = Field(default=20, ge=1, validation_alias="COUPON_GUESS_LIMIT")
    guess_caller_limit: int = Field(default=200, ge=1, validation_alias="COUPON_GUESS_CALLER_LIMIT")
    guess_window_seconds: int = Field(default=600, ge=1, validation_alias="COUPON_GUESS_WINDOW_SECONDS")
    # One campaign's code space divided by its codes must stay at least 2^min_guess_bits: calibrated against
    # the caller ceiling above (docs/operations.md, "Coupon codes"): 34 lets one campaign hold 1,000,000 codes
    # of the default format (1,478,968 at most).
    min_guess_bits: int = Field(default=34, ge=1, validation_alias="COUPON_MIN_GUESS_BITS")
    # Counts up to this are generated inside the request (201); larger ones run as a background job (202).
    sync_codes_max: int = Field(default=10_000, validation_alias="COUPON_SYNC_CODES_MAX")
    code_batch_size: int = Field(default=100_000, validation_alias="COUPON_CODE_BATCH_SIZE")
    # where gift rules' `reward.gift_granted` events go (the points service grants the catalogue item)
    points_url: str = Field(default="http://127.0.0.1:8002", validation_alias="POINTS_URL")
