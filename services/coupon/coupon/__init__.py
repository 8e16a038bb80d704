"""Reciprocity coupon service: campaigns, unguessable codes, issuance, validation, redemptions and surprise rules."""
