"""Which service owns each public path, and who may call it.

Rules are tried in order; the first whose pattern matches the path decides. Reads (GET, HEAD) need the
rule's read scope, everything else its write scope. A customer token may use a rule only for the methods in
`customer_methods`, and on paths that name a customer, only its own id (another customer's is 404).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.principals import Principal
from kit.errors import Forbidden, NotFound

__all__ = ["GATEWAY_ROUTES", "ROUTES", "Route", "authorize", "match_route"]

READ_METHODS = frozenset({"GET", "HEAD"})
_ID = r"[A-Za-z0-9._:-]{1,64}"
_CUSTOMER = rf"/v1/customers/(?P<customer_id>{_ID})"


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    service: str
    read_scope: str
    write_scope: str
    customer_methods: frozenset[str] = field(default_factory=frozenset)
    public: bool = False

    def scope_for(self, method: str) -> str:
        return self.read_scope if method in READ_METHODS else self.write_scope


def _route(pattern: str, service: str, read: str, write: str, customer: str = "", public: bool = False) -> Route:
    return Route(re.compile(pattern + r"$"), service, read, write, frozenset(customer.split()), public)


ROUTES: tuple[Route, ...] = (
    # coupon
    _route(r"/v1/coupon-campaigns(/.*)?", "coupon", "coupons:read", "coupons:write"),
    _route(r"/v1/coupon-rules(/.*)?", "coupon", "coupons:read", "coupons:write"),
    _route(r"/v1/coupons/[^/]+/validation", "coupon", "coupons:read", "coupons:read", customer="POST"),
    _route(r"/v1/coupons/[^/]+/redemptions", "coupon", "coupons:read", "coupons:write", customer="POST"),
    _route(r"/v1/coupons(/.*)?", "coupon", "coupons:read", "coupons:write"),
    _route(r"/v1/coupon-redemptions(/.*)?", "coupon", "coupons:read", "coupons:write"),
    _route(_CUSTOMER + r"/coupons", "coupon", "coupons:read", "coupons:write", customer="GET"),
    # points
    _route(r"/v1/points/expiry-runs", "points", "admin", "admin"),
    _route(r"/v1/points(/.*)?", "points", "points:read", "points:write"),
    _route(_CUSTOMER + r"/points/redemptions", "points", "points:read", "points:write", customer="POST"),
    _route(_CUSTOMER + r"/points(/transactions)?", "points", "points:read", "points:write", customer="GET"),
    _route(_CUSTOMER + r"/points/.*", "points", "points:read", "points:write"),
    # recommend
    _route(r"/v1/recommend/model/retrain", "recommend", "admin", "admin"),
    _route(r"/v1/recommend(/.*)?", "recommend", "recommend:read", "recommend:write"),
    _route(r"/v1/products(/.*)?", "recommend", "recommend:read", "recommend:write"),
    _route(r"/v1/interactions(:import|/.*)?", "recommend", "recommend:read", "recommend:write"),
    _route(_CUSTOMER + r"/preferences", "recommend", "recommend:read", "recommend:write", customer="GET PUT"),
    _route(_CUSTOMER + r"/recommendations", "recommend", "recommend:read", "recommend:write", customer="GET"),
    # survey
    _route(r"/v1/surveys(/.*)?", "survey", "surveys:read", "surveys:write"),
    _route(r"/v1/survey-invitations/[^/]+", "survey", "surveys:read", "surveys:write", customer="GET"),
    _route(r"/v1/survey-invitations(/.*)?", "survey", "surveys:read", "surveys:write"),
    _route(r"/v1/survey-responses", "survey", "surveys:read", "surveys:write", customer="POST"),
    _route(_CUSTOMER + r"/surveys", "survey", "surveys:read", "surveys:write", customer="GET"),
    _route(r"/s/.*", "survey", "", "", public=True),
)

# Paths the gateway answers itself (after authentication); same rules, service "gateway".
GATEWAY_ROUTES: tuple[Route, ...] = (
    _route(r"/v1/api-keys(/.*)?", "gateway", "admin", "admin"),
    _route(r"/v1/customer-tokens", "gateway", "customers:tokens", "customers:tokens"),
    _route(r"/v1/purchases(/.*)?", "gateway", "purchases:write", "purchases:write"),
    _route(r"/v1/admin/.*", "gateway", "admin", "admin"),
    _route(_CUSTOMER + r"/overview", "gateway", "points:read", "points:read", customer="GET"),
)


def match_route(path: str, routes: tuple[Route, ...] = ROUTES) -> tuple[Route, re.Match[str]] | None:
    for route in routes:
        found = route.pattern.match(path)
        if found:
            return route, found
    return None


def authorize(principal: Principal, route: Route, found: re.Match[str], method: str) -> None:
    if principal.kind == "customer":
        customer_id = found.groupdict().get("customer_id")
        if customer_id is not None and customer_id != principal.id:
            raise NotFound("No such resource.")
        if method not in route.customer_methods and not (method == "HEAD" and "GET" in route.customer_methods):
            raise Forbidden("A customer token cannot call this operation.", code="forbidden")
        return
    scope = route.scope_for(method)
    if not principal.has_scope(scope):
        raise Forbidden(f"This key lacks the {scope!r} scope.", code="missing_scope", required_scope=scope)
