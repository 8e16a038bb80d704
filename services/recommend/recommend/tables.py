"""The recommend service's tables, all in its own `recommend` schema."""

from sqlalchemy import MetaData

from kit.tables import add_kit_tables

metadata = MetaData()
add_kit_tables(metadata)
