"""All SQL of the coupon service, one module per table family; each function answers typed rows (frozen
dataclasses), never SQLAlchemy rows. Hot paths (redemption, validation, COPY of codes, events) speak asyncpg on
the request's own connection (`kit.db`), the rest SQLAlchemy `text()` statements."""
