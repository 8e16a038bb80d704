from pydantic import Field

from kit.settings import ServiceSettings


class RecommendSettings(ServiceSettings):
    port: int = Field(default=8003, validation_alias="RECOMMEND_PORT")
    retrain_interval_seconds: float = Field(default=3600.0, validation_alias="RECOMMEND_RETRAIN_SECONDS")
    # Training (in the workers) in a child process keeps numpy/scipy's GIL-holding parts away from the worker's
    # loop and, under PROCESS_ROLE all, from request latency.
    train_in_subprocess: bool = Field(default=True, validation_alias="RECOMMEND_TRAIN_IN_SUBPROCESS")
    serving_pool_size: int = Field(default=8, validation_alias="RECOMMEND_SERVING_POOL_SIZE")
    # Each training searches settings on the latest slice of the history for at most this long (0: keep the
    # defaults, still scored against the baselines).
    tuning_budget_seconds: float = Field(default=30.0, ge=0, validation_alias="RECOMMEND_TUNING_BUDGET_SECONDS")
    # How often each api process looks for a newer model stored by a worker, and each worker for a training
    # request whose notice it missed.
    model_poll_seconds: float = Field(default=5.0, gt=0, validation_alias="RECOMMEND_MODEL_POLL_SECONDS")
