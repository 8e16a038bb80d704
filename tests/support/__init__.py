"""Test support: a real PostgreSQL database, the five apps served over real HTTP on loopback, and helpers
for starting real processes."""
