"""Reciprocity gateway: the one public port in front of the four services."""
