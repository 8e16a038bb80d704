"""Who is calling the gateway, from the bearer token: the admin key, a partner API key or a customer JWT."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import jwt
from sqlalchemy import select

from gateway.tables import api_keys
from kit.db import Database
from kit.errors import Unauthorized

__all__ = ["SCOPES", "Authenticator", "Principal", "Scope", "hash_api_key", "new_api_key"]

Scope = Literal[
    "purchases:write",
    "points:read",
    "points:write",
    "coupons:read",
    "coupons:write",
    "recommend:read",
    "recommend:write",
    "surveys:read",
    "surveys:write",
    "customers:tokens",
    "admin",
]
SCOPES: frozenset[str] = frozenset(get_args(Scope))
API_KEY_PREFIX = "rcp_"


@dataclass(frozen=True)
class Principal:
    kind: Literal["admin", "partner", "customer"]
    id: str
    scopes: frozenset[str]

    def has_scope(self, scope: str) -> bool:
        return self.kind == "admin" or "admin" in self.scopes or scope in self.scopes

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.id}"


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 suffices: keys carry 256 random bits, so no slow hash is needed against guessing."""
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    def __init__(self, *, admin_key: str, jwt_secret: str, database: Database, cache_seconds: float) -> None:
        self._admin_key = admin_key.encode()
        self._jwt_secret = jwt_secret
        self._database = database
        self._cache_seconds = cache_seconds
        self._api_key_cache: dict[str, tuple[float, Principal | None]] = {}

    def mint_customer_token(self, customer_id: str, ttl_seconds: int) -> tuple[str, datetime]:
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = now + timedelta(seconds=ttl_seconds)
        token = jwt.encode(
            {"sub": customer_id, "iat": now, "exp": expires_at, "typ": "customer", "jti": uuid.uuid4().hex},
            self._jwt_secret,
            algorithm="HS256",
        )
        return token, expires_at

    def forget_api_key(self, key_hash: str) -> None:
        self._api_key_cache.pop(key_hash, None)

    def forget_all(self) -> None:
        self._api_key_cache.clear()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise Unauthorized()
        token = authorization[7:].strip()
        if hmac.compare_digest(token.encode(), self._admin_key):
            return Principal("admin", "admin", frozenset({"admin"}))
        if token.startswith(API_KEY_PREFIX):
            principal = await self._api_key(token)
            if principal is None:
                raise Unauthorized("This API key is not valid or was revoked.")
            return principal
        try:
            claims = jwt.decode(token, self._jwt_secret, algorithms=["HS256"], options={"require": ["sub", "exp"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("This customer token has expired.", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("This token is not valid.") from None
        return Principal("customer", str(claims["sub"]), frozenset())

    async def _api_key(self, key: str) -> Principal | None:
        """Cached briefly so a hot partner costs no query per request; revocation here clears the entry."""
        key_hash = hash_api_key(key)
        now = time.monotonic()
        cached = self._api_key_cache.get(key_hash)
        if cached and cached[0] > now:
            return cached[1]
        async with self._database.transaction() as session:
            row = (
                await session.execute(
                    select(api_keys.c.id, api_keys.c.scopes).where(
                        api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = Principal("partner", str(row.id), frozenset(row.scopes)) if row else None
        if len(self._api_key_cache) > 10_000:
            self._api_key_cache.clear()
        self._api_key_cache[key_hash] = (now + self._cache_seconds, principal)
        return principal
