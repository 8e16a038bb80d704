"""Webhooks to partner systems (CONTRACT.md, "Webhooks to partner systems"): endpoints and secrets
(`domain`, `api`), the signature (`signing`), the SSRF guard (`ssrf`), the delivery engine (`delivery`).
Events arrive from every service's outbox on the gateway's internal events route (`handlers`)."""
