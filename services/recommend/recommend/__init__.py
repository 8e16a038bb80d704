"""Reciprocity recommend service: catalog, purchase history, preferences and personal recommendations."""
