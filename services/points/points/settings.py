from pydantic import Field

from kit.settings import ServiceSettings


class PointsSettings(ServiceSettings):
    port: int = Field(default=8002, validation_alias="POINTS_PORT")
