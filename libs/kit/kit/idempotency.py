"""`Idempotency-Key` as the contract says, stored in each service's schema.

- same key, same body: the first response is replayed with `Idempotent-Replayed: true`;
- same key, another body: 422 `idempotency_key_reused`;
- same key while the first request still runs: 409 `idempotency_key_in_use` with `Retry-After`.

Keys are scoped to the caller and the route (method and path). The claim is a transaction-scoped advisory
lock, so a crashed request leaves nothing behind; the stored response is inserted in the request's own
transaction, so it commits together with the effect or not at all.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from kit import idempotency_repository as repository
from kit.errors import Conflict, FieldError, Unprocessable, ValidationFailed
from kit.idempotency_repository import StoredResponse
from kit.state import DATABASE

__all__ = ["HEADER", "RETENTION", "Claim", "claim", "purge_expired", "remember"]

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255
_REPLAYED_HEADERS = ("content-type", "location")


@dataclass(frozen=True)
class Claim:
    caller: str
    route: str
    key: str
    request_hash: str
    replay: Response | None = None


def caller_key(request: Request) -> str:
    """The gateway sets `state.caller_key` itself; behind it, services read the caller headers it sent."""
    own = getattr(request.state, "caller_key", None)
    if own:
        return str(own)
    headers = request.headers
    return f"{headers.get('x-caller-kind', 'internal')}:{headers.get('x-caller-id', '-')}"


async def claim(session: AsyncSession, request: Request, key: str) -> Claim:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed([FieldError("Idempotency-Key", f"Must be 1-{MAX_KEY_LENGTH} characters.")])
    caller = caller_key(request)
    route = f"{request.method} {request.url.path}"
    request_hash = hashlib.sha256(await request.body()).hexdigest()
    # Advisory locks are per database, and the services share one: the schema keeps their keys apart.
    scope = f"{DATABASE.of(request.app).schema}\n{caller}\n{route}\n{key}"
    if not await repository.try_lock(session, scope):
        raise Conflict(
            "A request with this Idempotency-Key is still being processed.",
            code="idempotency_key_in_use",
            headers={"Retry-After": "1"},
        )
    stored = await repository.find(session, caller, route, key)
    if stored is None:
        return Claim(caller, route, key, request_hash)
    if stored.request_hash != request_hash:
        raise Unprocessable(
            "This Idempotency-Key was already used with a different request body.", code="idempotency_key_reused"
        )
    headers = {name: value for name, value in (stored.headers or {}).items()}
    headers[REPLAYED_HEADER] = "true"
    replay = Response(content=stored.body, status_code=stored.status_code, headers=headers)
    return Claim(caller, route, key, request_hash, replay=replay)


async def remember(session: AsyncSession, claim: Claim, response: Response) -> None:
    """Store a successful response; errors are not stored, so a retry after a failure runs again."""
    if response.status_code >= 400 or not hasattr(response, "body"):
        return
    headers = {name: response.headers[name] for name in _REPLAYED_HEADERS if name in response.headers}
    stored = StoredResponse(claim.request_hash, response.status_code, headers, bytes(response.body))
    await repository.insert_response(session, claim.caller, claim.route, claim.key, stored)


async def purge_expired(session: AsyncSession) -> int:
    """Removes the keys older than twice RETENTION (the time the contract promises a replay for)."""
    return await repository.delete_older_than(session, RETENTION * 2)
