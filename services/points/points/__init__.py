"""Reciprocity points service: the loyalty ledger: earning rules, tiers, lots that expire, redemptions and reversals."""
