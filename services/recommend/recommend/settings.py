from pydantic import Field

from kit.settings import ServiceSettings


class RecommendSettings(ServiceSettings):
    port: int = Field(default=8003, validation_alias="RECOMMEND_PORT")
