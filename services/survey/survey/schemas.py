"""Request and response bodies of the survey API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from kit.types import Email, Identifier, Points, StrictModel

QuestionType = Literal["nps", "rating", "text", "choice"]
Interval = Literal["day", "week", "month"]
InvitationStatus = Literal["queued", "sent", "failed", "cancelled"]


def _no_nul(value: str) -> str:
    # PostgreSQL text and JSONB cannot hold NUL: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


OptionText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)
]

PreferenceCategory = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_no_nul)
]

MAX_TEXT_ANSWER = 2000


class QuestionIn(StrictModel):
    id: Identifier
    type: QuestionType
    text: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500), AfterValidator(_no_nul)
    ]
    required: bool = False
    options: Annotated[list[OptionText], Field(min_length=2, max_length=20)] | None = None
    # Additive to the contract: a choice question declared a preference question; an answer adds the chosen
    # option's product category to the customer's preferences in the recommender.
    preference_categories: (
        Annotated[dict[OptionText, PreferenceCategory], Field(min_length=1, max_length=20)] | None
    ) = Field(
        default=None,
        description="Choice questions only: option -> product category. Choosing a mapped option adds its"
        " category to the customer's preferred categories (and takes it off the excluded ones).",
    )

    @model_validator(mode="after")
    def _options_only_for_choice(self) -> QuestionIn:
        if self.type == "choice":
            if not self.options:
                raise ValueError("a choice question needs options")
            if len(set(self.options)) != len(self.options):
                raise ValueError("options must be distinct")
            unknown = set(self.preference_categories or {}) - set(self.options)
            if unknown:
                raise ValueError(f"preference_categories names options the question does not have: {sorted(unknown)}")
        elif self.options is not None:
            raise ValueError(f"a {self.type} question takes no options")
        elif self.preference_categories is not None:
            raise ValueError("only a choice question can be a preference question")
        return self


class SurveyCreate(StrictModel):
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_no_nul)
    ]
    questions: Annotated[list[QuestionIn], Field(min_length=1, max_length=50)]
    reward_points: Points | None = None
    cooldown_days: Annotated[int, Field(ge=0, le=3650, strict=True)] = 90
    # Additive to the contract: the newest survey with this flag is sent after purchases.
    send_after_purchase: bool = False

    @field_validator("questions")
    @classmethod
    def _unique_ids(cls, questions: list[QuestionIn]) -> list[QuestionIn]:
        ids = [q.id for q in questions]
        if len(set(ids)) != len(ids):
            raise ValueError("question ids must be unique")
        return questions


class Question(BaseModel):
    id: str
    type: QuestionType
    text: str
    required: bool
    options: list[str] | None = None
    preference_categories: dict[str, str] | None = None


class Survey(BaseModel):
    id: uuid.UUID
    name: str
    questions: list[Question]
    reward_points: int | None
    cooldown_days: int
    send_after_purchase: bool
    created_at: datetime


class InvitationCreate(StrictModel):
    customer_id: Identifier
    email: Email


class InvitationQueued(BaseModel):
    invitation_id: uuid.UUID
    status: InvitationStatus


class Invitation(BaseModel):
    """What became of one invitation (additive to the contract)."""

    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    customer_id: str
    status: InvitationStatus
    source: Literal["api", "purchase"]
    created_at: datetime
    send_at: datetime
    sent_at: datetime | None
    expires_at: datetime
    responded_at: datetime | None
    attempts: int
    last_error: str | None


class PendingSurvey(BaseModel):
    """An invitation the customer can still answer (for the customer overview)."""

    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    name: str
    reward_points: int | None
    sent_at: datetime | None
    expires_at: datetime


class InvitationForm(BaseModel):
    """The survey behind a personal link, for apps that render it themselves."""

    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    name: str
    questions: list[Question]
    reward_points: int | None
    expires_at: datetime


class AnswerIn(StrictModel):
    question_id: Annotated[str, StringConstraints(max_length=64)]
    value: StrictInt | StrictStr | None


class ResponseCreate(StrictModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    answers: Annotated[list[AnswerIn], Field(max_length=100)]


class ResponseCreated(BaseModel):
    response_id: uuid.UUID
    invitation_id: uuid.UUID
    survey_id: uuid.UUID
    reward_points: int | None
    submitted_at: datetime


class NpsSummary(BaseModel):
    score: float | None = Field(description="100 × (promoters − detractors) / answered NPS scores; null with none.")
    promoters: int
    passives: int
    detractors: int


class TrendPoint(BaseModel):
    period_start: datetime
    responses: int
    nps: float | None


class SurveyResults(BaseModel):
    survey_id: uuid.UUID
    invited: int
    responded: int
    response_rate: float | None = Field(description="responded / invited, as a fraction; null when none invited.")
    nps: NpsSummary
    csat: float | None = Field(description="Share (0-1) of answered ratings that are 4 or 5; null with none.")
    trend: list[TrendPoint]


class OptOutLine(StrictModel):
    """One line of `POST /v1/survey-opt-outs:import`: a customer, an address, or both, never to be invited."""

    customer_id: Identifier | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _someone(self) -> OptOutLine:
        if self.customer_id is None and self.email is None:
            raise ValueError("A customer_id, an email, or both.")
        return self
