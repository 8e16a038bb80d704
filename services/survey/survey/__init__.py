"""Reciprocity survey service: surveys, email invitations, public answer pages and NPS/CSAT results."""
