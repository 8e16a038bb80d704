"""Request and response bodies of the recommend service."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, StringConstraints, model_validator

from kit.types import Currency, Identifier, Money, StrictModel, check_money

Category = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
MAX_PRODUCTS_PER_CALL = 10_000


class ProductIn(StrictModel):
    product_id: Identifier
    name: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    category: Category
    price: Money | None = None
    currency: Currency | None = None
    active: bool = True

    @model_validator(mode="after")
    def _price_and_currency(self) -> Self:
        if (self.price is None) != (self.currency is None):
            raise ValueError("price and currency come together")
        if self.price is not None and self.currency is not None:
            check_money(self.price, self.currency)
        return self


class ProductsPut(StrictModel):
    items: Annotated[list[ProductIn], Field(min_length=1, max_length=MAX_PRODUCTS_PER_CALL)]


class ProductsPutResult(BaseModel):
    received: int
    changed: int


class Product(BaseModel):
    product_id: str
    name: str
    category: str
    price: Decimal | None
    currency: str | None
    active: bool
    updated_at: datetime


class ImportError_(BaseModel):
    line: int
    message: str


class ImportResult(BaseModel):
    imported: int
    rejected: int
    errors: list[ImportError_] = Field(description="The first 1,000 rejected lines, by line number (1 = first line).")


class PreferencesIn(StrictModel):
    categories: Annotated[list[Category], Field(max_length=100)]
    excluded_categories: Annotated[list[Category], Field(max_length=100)] = []


class Preferences(BaseModel):
    customer_id: str
    categories: list[str]
    excluded_categories: list[str]
    updated_at: datetime


class RecommendedItem(BaseModel):
    product_id: str
    name: str
    category: str
    score: float = Field(description="Only ranks the items of one answer; not comparable across answers.")
    reason: str


class Recommendations(BaseModel):
    customer_id: str
    strategy: Literal["personal", "preference", "popular"]
    mode: Literal["discover", "buy_again", "mixed"]
    model_version: int
    items: list[RecommendedItem]


class SimilarProducts(BaseModel):
    product_id: str
    model_version: int
    items: list[RecommendedItem]


class Scores(BaseModel):
    ndcg_at_10: float = Field(description="`mode=mixed` against every held-out purchase.")
    ndcg_at_10_new_products: float = Field(
        description="`mode=discover` against the held-out products the customer had not bought before."
    )


class Validation(BaseModel):
    split: Literal["temporal", "random", "none"] = Field(
        description="`temporal`: the latest 15% of purchases held out; `random`: a fifth of the (customer, product)"
        " pairs (when timestamps do not spread); `none`: too little history to hold anything out."
    )
    customers: int = Field(description="Customers scored on the held-out slice.")
    held_out_purchases: int
    score: Scores | None = Field(description="The chosen settings on the held-out slice.")
    baselines: dict[str, Scores] = Field(
        description="`popularity`, `own_most_bought` and `ease_fixed` (the default settings) on the same slice."
    )
    settings_tried: int
    search_seconds: float


class ModelInfo(BaseModel):
    version: int
    trained_at: datetime | None
    customers: int
    products: int
    interactions: int
    training: bool = Field(description="Whether a new model is being trained now.")
    training_seconds: float | None = Field(description="How long the last training took, from reading to swapping in.")
    settings: dict[str, float] = Field(description="The settings the model was trained with and serves with.")
    validation: Validation | None = Field(description="How the settings were chosen; null before the first training.")


class RetrainAccepted(BaseModel):
    status: Literal["accepted"]
    version: int
