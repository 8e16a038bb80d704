from pydantic import Field

from kit.settings import ServiceSettings


class PointsSettings(ServiceSettings):
    port: int = Field(default=8002, validation_alias="POINTS_PORT")
    # how often the service expires due lots on its own (POST /v1/points/expiry-runs runs one at once)
    expiry_interval_seconds: float = Field(default=3600.0, gt=0, validation_alias="POINTS_EXPIRY_INTERVAL_SECONDS")
