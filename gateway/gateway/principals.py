"""Who is calling the gateway, from the bearer token: the admin key, a partner API key or a customer JWT."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import jwt

from gateway import api_key_repository, customer_tokens
from kit.db import Database
from kit.errors import Unauthorized
from kit.shared_state import SharedState

__all__ = ["SCOPES", "Authenticator", "Principal", "Scope", "hash_api_key", "new_api_key"]

# Revocations are told to every gateway replica on this channel (through Redis), so that each drops its cached
# answer at once instead of when the entry expires.
REVOCATIONS_CHANNEL = "revocations"

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
    # a customer token: who minted it (`admin:admin`, `partner:<key id>`), so what its holder does can be
    # counted against the minter (coupon guesses); None for tokens minted before the claim existed
    issuer: str | None = None

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


class _LruCache:
    """Entries that expire after `seconds`, at most `max_entries` of them: the least recently used goes first,
    so a flood of new keys evicts only idle entries and never empties the cache."""

    def __init__(self, seconds: float, max_entries: int) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return False, None
        self._entries.move_to_end(key)
        return True, entry[1]

    def put(self, key: str, value: Any) -> None:
        self._entries[key] = (time.monotonic() + self.seconds, value)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class CustomerClaims:
    customer_id: str
    token_id: str
    issued_at: float
    expires_at: datetime


class Authenticator:
    def __init__(
        self,
        *,
        admin_key: str,
        jwt_secret: str,
        database: Database,
        cache_seconds: float,
        revocation_cache_seconds: float = 5.0,
        max_entries: int = 10_000,
        shared: SharedState | None = None,
    ) -> None:
        self._admin_key = admin_key.encode()
        self._jwt_secret = jwt_secret
        self._database = database
        self._api_keys = _LruCache(cache_seconds, max_entries)
        self._revocations = _LruCache(revocation_cache_seconds, max_entries)
        self._shared = shared or SharedState(None)
        self._shared.subscribe(REVOCATIONS_CHANNEL, self._on_revocation)
        # while the subscription was broken, revocations elsewhere went unheard: forget everything cached
        self._shared.on_resubscribed(self.forget_all)

    def _on_revocation(self, message: dict[str, Any]) -> None:
        if message.get("kind") == "api_key":
            self.forget_api_key(str(message.get("key_hash")))
        elif message.get("kind") == "customer_tokens":
            token_id = message.get("token_id")
            self.forget_revocations(str(message.get("customer_id")), None if token_id is None else str(token_id))

    async def announce_api_key_revoked(self, key_hash: str) -> None:
        """After the revocation committed: this gateway and every other replica drop the cached key."""
        self.forget_api_key(key_hash)
        await self._shared.publish(REVOCATIONS_CHANNEL, {"kind": "api_key", "key_hash": key_hash})

    async def announce_customer_tokens_revoked(self, customer_id: str, token_id: str | None) -> None:
        self.forget_revocations(customer_id, token_id)
        await self._shared.publish(
            REVOCATIONS_CHANNEL, {"kind": "customer_tokens", "customer_id": customer_id, "token_id": token_id}
        )

    def mint_customer_token(
        self, customer_id: str, ttl_seconds: int, issuer: str | None = None
    ) -> tuple[str, str, datetime]:
        """A token, its id (`jti`) and its expiry. `iat` keeps its fraction of a second, so a token minted just
        after a "revoke all" is not caught by it. `azp` names the principal that minted it."""
        issued_at = time.time()
        expires_at = datetime.fromtimestamp(int(issued_at) + ttl_seconds, UTC)
        token_id = uuid.uuid4().hex
        claims = {"sub": customer_id, "iat": issued_at, "exp": expires_at, "typ": "customer", "jti": token_id}
        token = jwt.encode(
            {**claims, **({"azp": issuer} if issuer else {})},
            self._jwt_secret,
            algorithm="HS256",
        )
        return token, token_id, expires_at

    def customer_claims(self, token: str) -> CustomerClaims:
        """The verified claims of a customer token (expired or revoked ones included: for revoking them)."""
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                options={"require": ["sub", "exp", "iat", "jti"], "verify_exp": False},
            )
        except jwt.PyJWTError:
            raise Unauthorized("This token is not valid.") from None
        return CustomerClaims(
            str(claims["sub"]), str(claims["jti"]), float(claims["iat"]), datetime.fromtimestamp(claims["exp"], UTC)
        )

    def forget_api_key(self, key_hash: str) -> None:
        self._api_keys.pop(key_hash)

    def forget_revocations(self, customer_id: str, token_id: str | None) -> None:
        """After a revocation in this process: every cached "not revoked" of that customer goes at once."""
        if token_id is None:
            self._revocations.clear()
        else:
            self._revocations.pop(token_id)

    def forget_all(self) -> None:
        self._api_keys.clear()
        self._revocations.clear()

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
            claims = jwt.decode(
                token, self._jwt_secret, algorithms=["HS256"], options={"require": ["sub", "exp", "iat", "jti"]}
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("This customer token has expired.", code="token_expired") from None
        except jwt.PyJWTError:
            raise Unauthorized("This token is not valid.") from None
        customer_id, token_id = str(claims["sub"]), str(claims["jti"])
        if await self._revoked(customer_id, token_id, float(claims["iat"])):
            raise Unauthorized("This customer token was revoked.", code="token_revoked")
        issuer = claims.get("azp")
        return Principal("customer", customer_id, frozenset(), issuer=str(issuer) if issuer else None)

    async def _revoked(self, customer_id: str, token_id: str, issued_at: float) -> bool:
        cached, revoked = self._revocations.get(token_id)
        if cached:
            return bool(revoked)
        async with self._database.transaction() as session:
            revoked = await customer_tokens.is_revoked(session, customer_id, token_id, issued_at)
        self._revocations.put(token_id, revoked)
        return bool(revoked)

    async def _api_key(self, key: str) -> Principal | None:
        """Cached briefly so a hot partner costs no query per request; revocation here clears the entry."""
        key_hash = hash_api_key(key)
        cached, principal = self._api_keys.get(key_hash)
        if cached:
            return principal  # type: ignore[no-any-return]
        async with self._database.transaction() as session:
            active = await api_key_repository.find_active(session, key_hash)
        principal = Principal("partner", str(active.id), frozenset(active.scopes)) if active else None
        self._api_keys.put(key_hash, principal)
        return principal
