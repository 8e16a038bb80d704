from pydantic import Field

from kit.settings import ServiceSettings


class SurveySettings(ServiceSettings):
    port: int = Field(default=8004, validation_alias="SURVEY_PORT")
