"""The gateway's route table: every path it serves, declared once, with who may call it and where it goes.

The front door is closed by default. A request is served only when

1. its raw path is canonical (:func:`canonical_path`): no dot segments, no empty segments, no encoded
   `/`, `?`, `#`, `\\` or `%`, no control characters, once decoded as well as raw; otherwise 400;
2. one entry of :data:`ROUTES` declares that method on that path; otherwise 404 (405 when only the method
   is not declared);
3. the caller passes that entry's :class:`Access`: public, a scope (the admin key and keys with the `admin`
   scope hold every scope), admin only; a customer token only where the entry admits customers, and on
   paths naming a customer only for its own id (another customer's is 404).

What is forwarded is the canonical path the decision was made on, never the bytes as received, so what was
authorised is exactly what the service sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Literal
from urllib.parse import unquote_to_bytes

from gateway.principals import Principal
from kit.errors import DomainError, Forbidden, NotFound

__all__ = [
    "ROUTES",
    "Access",
    "BodyClass",
    "InvalidPath",
    "MethodNotAllowed",
    "Route",
    "RouteMatch",
    "authorize",
    "canonical_path",
    "declared_route",
    "match",
]

Target = Literal["gateway", "coupon", "points", "recommend", "survey"]


class BodyClass(Enum):
    """How large a request body each kind of route accepts (bytes); larger is 413."""

    NONE = 0
    FORM = 64 * 1024
    JSON = 1024 * 1024
    BULK = 32 * 1024 * 1024


@dataclass(frozen=True)
class Access:
    """Who may call a route.

    `scope` None with `public` False means the admin key only (or a partner key with the `admin` scope).
    """

    public: bool = False
    scope: str | None = None
    customer: bool = False
    # Other processes of the deployment only: the front door requires X-Internal-Token and answers 404
    # without it, as if the path did not exist.
    internal: bool = False

    def describe(self) -> str:
        if self.public:
            return "anyone"
        if self.internal:
            return "the deployment's own processes (internal token)"
        who = f"scope {self.scope}" if self.scope else "admin"
        return who + (", or the customer's own token" if self.customer else "")


PUBLIC = Access(public=True)
ADMIN = Access()
INTERNAL = Access(internal=True)


def scope(name: str, *, customer: bool = False) -> Access:
    return Access(scope=name, customer=customer)


# Path parameters by name: each matches exactly one canonical segment.
_IDENTIFIER = r"[A-Za-z0-9._:-]{1,64}"
PARAMETERS: dict[str, str] = {
    "customer_id": _IDENTIFIER,
    "product_id": _IDENTIFIER,
    "purchase_id": _IDENTIFIER,
    "code": r"[A-Za-z0-9-]{1,64}",
    "token": r"[A-Za-z0-9_-]{1,128}",
    "key_id": r"[0-9a-fA-F-]{32,36}",
    "campaign_id": r"[0-9a-fA-F-]{32,36}",
    "job_id": r"[0-9a-fA-F-]{32,36}",
    "rule_id": r"[0-9a-fA-F-]{32,36}",
    "redemption_id": r"[0-9a-fA-F-]{32,36}",
    "reward_id": r"[0-9a-fA-F-]{32,36}",
    "survey_id": r"[0-9a-fA-F-]{32,36}",
    "invitation_id": r"[0-9a-fA-F-]{32,36}",
    "delivery_id": r"[0-9]{1,18}",
    "endpoint_id": r"[0-9a-fA-F-]{32,36}",
    "experiment_id": r"[0-9a-fA-F-]{32,36}",
    "asset": r"[a-z0-9-]{1,64}\.(?:css|js|png|svg)",
}
_PARAMETER = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    target: Target
    access: Access
    body: BodyClass
    segments: tuple[str | tuple[str, re.Pattern[str]], ...]

    @property
    def label(self) -> str:
        return f"{self.target}:{self.template}"


def route(method: str, template: str, target: Target, access: Access, body: BodyClass | None = None) -> Route:
    segments: list[str | tuple[str, re.Pattern[str]]] = []
    for segment in template.strip("/").split("/"):
        found = _PARAMETER.fullmatch(segment)
        if found:
            segments.append((found.group(1), re.compile(PARAMETERS[found.group(1)])))
        else:
            segments.append(segment)
    if body is None:
        body = BodyClass.NONE if method in ("GET", "HEAD", "DELETE") else BodyClass.JSON
    return Route(method, template, target, access, body, tuple(segments))


def _console_routes() -> tuple[Route, ...]:
    # each console path and the methods it answers: pages are GET, forms POST
    paths = {
        "/console": "GET",
        "/console/": "GET",
        "/console/login": "GET POST",
        "/console/static/{asset}": "GET",
        "/console/campaigns": "GET POST",
        "/console/campaigns/{campaign_id}": "GET POST",
        "/console/campaigns/{campaign_id}/codes.csv": "GET",
        "/console/rules": "GET POST",
        "/console/points": "GET POST",
        "/console/surveys": "GET POST",
        "/console/surveys/{survey_id}": "GET",
        "/console/customers": "GET",
        "/console/customers/{customer_id}": "GET POST",
        "/console/deliveries": "GET POST",
        "/console/api-keys": "GET POST",
        "/console/experiments": "GET POST",
        "/console/experiments/{experiment_id}": "GET POST",
        "/console/webhooks": "GET POST",
        "/console/webhooks/{endpoint_id}": "GET POST",
        "/console/rewards": "GET POST",
        "/console/logout": "POST",
    }
    return tuple(
        route(method, path, "gateway", PUBLIC, BodyClass.FORM if method == "POST" else None)
        for path, methods in paths.items()
        for method in methods.split()
    )


_CUSTOMER = "/v1/customers/{customer_id}"
_BULK = BodyClass.BULK

ROUTES: tuple[Route, ...] = (
    # the gateway's own
    route("GET", "/healthz", "gateway", PUBLIC),
    route("GET", "/readyz", "gateway", PUBLIC),
    route("GET", "/metrics", "gateway", PUBLIC),
    route("GET", "/openapi.json", "gateway", PUBLIC),
    route("GET", "/docs", "gateway", PUBLIC),
    route("POST", "/v1/api-keys", "gateway", ADMIN),
    route("GET", "/v1/api-keys", "gateway", ADMIN),
    route("DELETE", "/v1/api-keys/{key_id}", "gateway", ADMIN),
    route("POST", "/v1/customer-tokens", "gateway", scope("customers:tokens")),
    route("POST", "/v1/customer-tokens/revocations", "gateway", scope("customers:tokens", customer=True)),
    route("POST", "/v1/purchases", "gateway", scope("purchases:write")),
    # importing history (contract v1.1, "Switching to Reciprocity"): admin only
    route("POST", "/v1/purchases:batch", "gateway", ADMIN, _BULK),
    route("GET", "/v1/purchases/{purchase_id}", "gateway", scope("purchases:write")),
    route("POST", "/v1/purchases/{purchase_id}/refunds", "gateway", scope("purchases:write")),
    route("GET", _CUSTOMER + "/overview", "gateway", scope("points:read", customer=True)),
    route("GET", "/v1/admin/deliveries", "gateway", ADMIN),
    route("POST", "/v1/admin/deliveries/{delivery_id}/retry", "gateway", ADMIN),
    route("POST", "/v1/webhook-endpoints", "gateway", ADMIN),
    route("GET", "/v1/webhook-endpoints", "gateway", ADMIN),
    route("GET", "/v1/webhook-endpoints/{endpoint_id}", "gateway", ADMIN),
    route("PATCH", "/v1/webhook-endpoints/{endpoint_id}", "gateway", ADMIN),
    route("DELETE", "/v1/webhook-endpoints/{endpoint_id}", "gateway", ADMIN),
    route("POST", "/v1/webhook-endpoints/{endpoint_id}/secret-rotations", "gateway", ADMIN),
    route("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries", "gateway", ADMIN),
    route("POST", "/v1/webhook-deliveries/{delivery_id}/retry", "gateway", ADMIN),
    # webhook events from the services' outboxes (kit.webhooks)
    route("POST", "/internal/events", "gateway", INTERNAL),
    route("POST", "/internal/events:batch", "gateway", INTERNAL, _BULK),
    route("POST", "/v1/experiments", "gateway", ADMIN),
    route("GET", "/v1/experiments", "gateway", ADMIN),
    route("GET", "/v1/experiments/{experiment_id}", "gateway", ADMIN),
    route("POST", "/v1/experiments/{experiment_id}/stop", "gateway", ADMIN),
    route("GET", "/v1/experiments/{experiment_id}/assignments/{customer_id}", "gateway", ADMIN),
    route("GET", "/v1/experiments/{experiment_id}/results", "gateway", ADMIN),
    # coupon
    route("POST", "/v1/coupon-campaigns", "coupon", scope("coupons:write")),
    route("GET", "/v1/coupon-campaigns", "coupon", scope("coupons:read")),
    route("GET", "/v1/coupon-campaigns/{campaign_id}", "coupon", scope("coupons:read")),
    route("PATCH", "/v1/coupon-campaigns/{campaign_id}", "coupon", scope("coupons:write")),
    route("POST", "/v1/coupon-campaigns/{campaign_id}/codes", "coupon", scope("coupons:write")),
    route("GET", "/v1/coupon-campaigns/{campaign_id}/codes", "coupon", scope("coupons:read")),
    route("POST", "/v1/coupon-campaigns/{campaign_id}/codes:import", "coupon", ADMIN, _BULK),
    route("GET", "/v1/coupon-campaigns/{campaign_id}/code-jobs/{job_id}", "coupon", scope("coupons:read")),
    route("POST", "/v1/coupon-campaigns/{campaign_id}/issuances", "coupon", scope("coupons:write")),
    route("GET", _CUSTOMER + "/coupons", "coupon", scope("coupons:read", customer=True)),
    # a customer token validates and redeems only its own coupons: the service checks the body's customer_id
    route("POST", "/v1/coupons/{code}/validation", "coupon", scope("coupons:read", customer=True)),
    route("POST", "/v1/coupons/{code}/redemptions", "coupon", scope("coupons:write", customer=True)),
    route("POST", "/v1/coupon-redemptions/{redemption_id}/rollback", "coupon", scope("coupons:write")),
    route("POST", "/v1/coupon-rules", "coupon", scope("coupons:write")),
    route("GET", "/v1/coupon-rules", "coupon", scope("coupons:read")),
    route("GET", "/v1/coupon-rules/{rule_id}", "coupon", scope("coupons:read")),
    route("PATCH", "/v1/coupon-rules/{rule_id}", "coupon", scope("coupons:write")),
    # points
    route("GET", _CUSTOMER + "/points", "points", scope("points:read", customer=True)),
    route("GET", _CUSTOMER + "/points/transactions", "points", scope("points:read", customer=True)),
    route("POST", _CUSTOMER + "/points/earn", "points", scope("points:write")),
    route("POST", _CUSTOMER + "/points/redemptions", "points", scope("points:write", customer=True)),
    route("POST", _CUSTOMER + "/points/adjustments", "points", scope("points:write")),
    route("POST", _CUSTOMER + "/points/reversals", "points", scope("points:write")),
    route("GET", "/v1/points/rules", "points", scope("points:read")),
    route("PUT", "/v1/points/rules", "points", scope("points:write")),
    route("GET", "/v1/points/tiers", "points", scope("points:read")),
    route("PUT", "/v1/points/tiers", "points", scope("points:write")),
    route("POST", "/v1/points/expiry-runs", "points", ADMIN),
    route("POST", "/v1/points/balances:import", "points", ADMIN, _BULK),
    route("GET", "/v1/points/liability", "points", scope("points:read")),
    route("GET", "/v1/points/audit", "points", scope("points:read")),
    # the rewards catalogue (points service); a customer cancels only its own pending items: the service checks
    route("POST", "/v1/rewards", "points", ADMIN),
    route("GET", "/v1/rewards", "points", scope("points:read", customer=True)),
    route("GET", "/v1/rewards/{reward_id}", "points", scope("points:read", customer=True)),
    route("PATCH", "/v1/rewards/{reward_id}", "points", ADMIN),
    route("GET", _CUSTOMER + "/rewards", "points", scope("points:read", customer=True)),
    route("POST", _CUSTOMER + "/reward-redemptions", "points", scope("points:write", customer=True)),
    route("GET", _CUSTOMER + "/reward-redemptions", "points", scope("points:read", customer=True)),
    # the shop's fulfilment queue across all customers (`?status=pending`): keys that read points, never a customer
    route("GET", "/v1/reward-redemptions", "points", scope("points:read")),
    route("POST", "/v1/reward-redemptions/{redemption_id}/fulfilment", "points", scope("points:write")),
    route(
        "POST", "/v1/reward-redemptions/{redemption_id}/cancellation", "points", scope("points:write", customer=True)
    ),
    # recommend
    route("PUT", "/v1/products", "recommend", scope("recommend:write"), _BULK),
    route("GET", "/v1/products/{product_id}", "recommend", scope("recommend:read")),
    route("GET", "/v1/products/{product_id}/similar", "recommend", scope("recommend:read")),
    route("POST", "/v1/interactions:import", "recommend", scope("recommend:write"), _BULK),
    route("GET", _CUSTOMER + "/preferences", "recommend", scope("recommend:read", customer=True)),
    route("PUT", _CUSTOMER + "/preferences", "recommend", scope("recommend:write", customer=True)),
    route("GET", _CUSTOMER + "/recommendations", "recommend", scope("recommend:read", customer=True)),
    route("GET", "/v1/recommend/model", "recommend", scope("recommend:read")),
    route("POST", "/v1/recommend/model/retrain", "recommend", ADMIN),
    # survey
    route("POST", "/v1/surveys", "survey", scope("surveys:write")),
    route("GET", "/v1/surveys", "survey", scope("surveys:read")),
    route("GET", "/v1/surveys/{survey_id}", "survey", scope("surveys:read")),
    route("POST", "/v1/surveys/{survey_id}/invitations", "survey", scope("surveys:write")),
    route("GET", "/v1/surveys/{survey_id}/invitations/{invitation_id}", "survey", scope("surveys:read")),
    route("GET", "/v1/surveys/{survey_id}/results", "survey", scope("surveys:read")),
    # the token is the credential here: a customer answers through it, the service checks it is theirs
    route("GET", "/v1/survey-invitations/{token}", "survey", scope("surveys:read", customer=True)),
    route("POST", "/v1/survey-opt-outs:import", "survey", ADMIN, _BULK),
    route("POST", "/v1/survey-responses", "survey", scope("surveys:write", customer=True)),
    route("GET", _CUSTOMER + "/surveys", "survey", scope("surveys:read", customer=True)),
    route("GET", "/s/{token}", "survey", PUBLIC),
    route("POST", "/s/{token}", "survey", PUBLIC, BodyClass.FORM),
    route("GET", "/s/{token}/unsubscribe", "survey", PUBLIC),
    route("POST", "/s/{token}/unsubscribe", "survey", PUBLIC, BodyClass.FORM),
    # the API docs' own assets, so /docs works without internet access
    route("GET", "/docs/assets/{asset}", "gateway", PUBLIC),
    # the console (gateway/console): public at the front door, as it signs people in with a session of its own
    # and then calls each operation as that key, on this table's rules
    *_console_routes(),
)


class InvalidPath(DomainError, status=400, code="invalid_path"): ...


class MethodNotAllowed(DomainError, status=405, code="method_not_allowed"): ...


_FORBIDDEN_IN_SEGMENT = frozenset(b"/?#\\%")
# The common case, checked in one pass: printable ASCII segments with nothing to decode and no dot segment.
_PLAIN_PATH = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[\x21\x22\x24\x26-\x2e\x30-\x3e\x40-\x5b\x5d-\x7e]+)+")


def canonical_path(raw_path: bytes) -> str:
    """The path as the route table sees it, or :class:`InvalidPath`.

    Each segment is percent-decoded once; the decoded segment must still be a plain segment: nothing that a
    later decoder, a proxy or a framework could read as a separator, a parent directory or another encoding.
    """
    if not raw_path.startswith(b"/") or len(raw_path) > 2048:
        raise InvalidPath("The path is not valid.")
    if raw_path == b"/":
        return "/"
    if raw_path in _DIRECTORIES:
        return raw_path.decode("ascii")
    if _PLAIN_PATH.fullmatch(raw_path):
        return raw_path.decode("ascii")
    decoded: list[str] = []
    for raw_segment in raw_path[1:].split(b"/"):
        segment = unquote_to_bytes(raw_segment) if b"%" in raw_segment else raw_segment
        if not segment or segment in (b".", b".."):
            raise InvalidPath("Empty and dot segments are not allowed in a path.")
        if any(byte < 0x21 or byte > 0x7E or byte in _FORBIDDEN_IN_SEGMENT for byte in segment):
            raise InvalidPath("A path segment holds a character that is not allowed (encoded or not).")
        decoded.append(segment.decode("ascii"))
    return "/" + "/".join(decoded)


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path: str
    parameters: dict[str, str]


def _index_key(segments: tuple[str | tuple[str, re.Pattern[str]], ...] | list[str]) -> tuple[int, str, str]:
    second = segments[1] if len(segments) > 1 else ""
    return len(segments), str(segments[0]), second if isinstance(second, str) else "*"


def _index(routes: tuple[Route, ...]) -> dict[tuple[int, str, str], list[Route]]:
    """Routes by (segment count, first segment, second segment or `*` where it is a parameter), so a request
    is compared with a handful of entries, not the whole table."""
    index: dict[tuple[int, str, str], list[Route]] = {}
    for entry in routes:
        assert isinstance(entry.segments[0], str), entry.template
        index.setdefault(_index_key(entry.segments), []).append(entry)
    return index


_INDEX = _index(tuple(entry for entry in ROUTES if not entry.template.endswith("/")))
# Paths served with a trailing slash (the console's home, where relative links resolve): matched exactly, as
# no other path may end in "/".
_DIRECTORY_ROUTES = {entry.template: entry for entry in ROUTES if entry.template.endswith("/")}
_DIRECTORIES = frozenset(template.encode() for template in _DIRECTORY_ROUTES)
_BY_TEMPLATE = {(entry.method, entry.template): entry for entry in ROUTES}


def declared_route(method: str, template: str) -> Route | None:
    """The entry declaring exactly this method and path template (as an OpenAPI document spells it)."""
    return _BY_TEMPLATE.get(("GET" if method == "HEAD" else method, template))


def _parameters(entry: Route, segments: list[str]) -> dict[str, str] | None:
    found: dict[str, str] = {}
    for expected, actual in zip(entry.segments, segments, strict=True):
        if isinstance(expected, str):
            if expected != actual:
                return None
        elif expected[1].fullmatch(actual):
            found[expected[0]] = actual
        else:
            return None
    return found


def match(method: str, path: str) -> RouteMatch:
    """The declared route for this method and canonical path: 404 when no entry names the path, 405 when
    entries name it for other methods only. HEAD is served wherever GET is."""
    wanted = "GET" if method == "HEAD" else method
    directory = _DIRECTORY_ROUTES.get(path)
    if directory is not None:
        if directory.method == wanted:
            return RouteMatch(directory, path, {})
        raise MethodNotAllowed(f"{method} is not allowed here.", headers={"Allow": directory.method})
    segments = path[1:].split("/")
    other_methods: list[str] = []
    count, first, second = _index_key(segments)
    candidates = [*_INDEX.get((count, first, second), ()), *_INDEX.get((count, first, "*"), ())]
    for entry in candidates:
        parameters = _parameters(entry, segments)
        if parameters is None:
            continue
        if entry.method == wanted:
            return RouteMatch(entry, path, parameters)
        other_methods.append(entry.method)
    if other_methods:
        raise MethodNotAllowed(
            f"{method} is not allowed here.", headers={"Allow": ", ".join(sorted(set(other_methods)))}
        )
    raise NotFound("No such resource.")


def authorize(principal: Principal, matched: RouteMatch) -> None:
    access = matched.route.access
    if access.public:
        return
    if access.internal:  # the front door admits these by the internal token, never by a principal
        raise NotFound("No such resource.")
    if principal.kind == "customer":
        customer_id = matched.parameters.get("customer_id")
        if customer_id is not None and customer_id != principal.id:
            raise NotFound("No such resource.")
        if not access.customer:
            raise Forbidden("A customer token cannot call this operation.", code="forbidden")
        return
    required = access.scope or "admin"
    if not principal.has_scope(required):
        raise Forbidden(f"This key lacks the {required!r} scope.", code="missing_scope", required_scope=required)
