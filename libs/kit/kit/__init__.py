"""Reciprocity's shared kit: the one way each service does settings, database sessions,
errors, idempotency, pagination, auth, logging, health checks and events.

Libraries are imported, never run: services build their app with :func:`kit.app.create_service_app`.
"""
