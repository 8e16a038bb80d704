"""The gateway's own routes. Authentication and scope checks already happened in the front door
(`gateway.proxy`); these routes read the principal it attached to the request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import BackgroundTasks, Depends, Path, Query, Request, Response

from gateway import api_keys, customer_tokens, purchases
from gateway.principals import Authenticator, Principal
from gateway.schemas import (
    MAX_TOKEN_TTL_SECONDS,
    ApiKey,
    ApiKeyCreate,
    ApiKeyCreated,
    CustomerOverview,
    CustomerToken,
    CustomerTokenCreate,
    CustomerTokenRevocation,
    CustomerTokenRevocationCreate,
    Delivery,
    DeliveryState,
    Purchase,
    PurchaseAccepted,
    PurchaseCreate,
    RefundAccepted,
    RefundCreate,
)
from gateway.state import AUTHENTICATOR, OVERVIEW, SettingsDep
from kit import events
from kit.db import SessionDep, service_router
from kit.errors import (
    FieldError,
    NotFound,
    Unauthorized,
    ValidationFailed,
    problem_responses,
)
from kit.imports import IMPORT_MEDIA_TYPES, ImportReport
from kit.json import ORJSONResponse
from kit.pagination import Page, PageParamsDep, paginate
from kit.types import IDENTIFIER_PATTERN, CustomerIdPath


async def get_principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized()
    return principal  # type: ignore[no-any-return]


PrincipalDep = Annotated[Principal, Depends(get_principal)]


AuthenticatorDep = Annotated[Authenticator, Depends(AUTHENTICATOR)]

router = service_router(responses=problem_responses(401, 403, 422, 429))


@router.post("/v1/api-keys", status_code=201, tags=["api-keys"], operation_id="create_api_key")
async def create_api_key(body: ApiKeyCreate, session: SessionDep, _: PrincipalDep) -> ApiKeyCreated:
    return ApiKeyCreated.model_validate(await api_keys.create(session, body.name, body.scopes), from_attributes=True)


@router.get("/v1/api-keys", tags=["api-keys"], operation_id="list_api_keys")
async def list_api_keys(session: SessionDep, page: PageParamsDep, _: PrincipalDep) -> Page[ApiKey]:
    rows, next_cursor = paginate(
        await api_keys.list_keys(session, page.limit, page.after(datetime, UUID)),
        page.limit,
        key=lambda r: (r.created_at.isoformat(), str(r.id)),
    )
    return Page[ApiKey](items=[ApiKey.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor)


@router.delete(
    "/v1/api-keys/{key_id}",
    status_code=204,
    tags=["api-keys"],
    operation_id="revoke_api_key",
    responses=problem_responses(404),
)
async def revoke_api_key(
    key_id: UUID, session: SessionDep, authenticator: AuthenticatorDep, _: PrincipalDep, after: BackgroundTasks
) -> Response:
    key_hash = await api_keys.revoke(session, key_id)
    authenticator.forget_api_key(key_hash)
    # told to every replica once committed (the response goes out after the commit, then background tasks run):
    # told earlier, another replica could read the key as valid again and cache that
    after.add_task(authenticator.announce_api_key_revoked, key_hash)
    return Response(status_code=204)


@router.post(
    "/v1/customer-tokens",
    status_code=201,
    tags=["customer-tokens"],
    operation_id="create_customer_token",
)
async def create_customer_token(
    body: CustomerTokenCreate, settings: SettingsDep, authenticator: AuthenticatorDep, principal: PrincipalDep
) -> CustomerToken:
    longest = settings.customer_token_max_ttl_seconds
    if body.ttl_seconds > longest:
        message = f"At most {longest} seconds (CUSTOMER_TOKEN_MAX_TTL_SECONDS)."
        raise ValidationFailed([FieldError("ttl_seconds", message)])
    token, token_id, expires_at = authenticator.mint_customer_token(
        body.customer_id, body.ttl_seconds, issuer=principal.rate_key
    )
    return CustomerToken(token=token, token_id=token_id, expires_at=expires_at)


@router.post(
    "/v1/customer-tokens/revocations",
    status_code=201,
    tags=["customer-tokens"],
    operation_id="revoke_customer_tokens",
    responses=problem_responses(404),
)
async def revoke_customer_tokens(
    body: CustomerTokenRevocationCreate,
    session: SessionDep,
    authenticator: AuthenticatorDep,
    principal: PrincipalDep,
    after: BackgroundTasks,
) -> CustomerTokenRevocation:
    """Revokes one customer token (by `token_id`) or all of a customer's tokens issued so far. A customer token
    may revoke its own customer's tokens (signing out); revoking is idempotent."""
    if principal.kind == "customer" and principal.id != body.customer_id:
        raise NotFound("No such resource.")
    # the listing may go once the token would have expired anyway: no token lives longer than the schema allows
    revocation = await customer_tokens.revoke(
        session, body.customer_id, body.token_id, datetime.now(UTC) + timedelta(seconds=MAX_TOKEN_TTL_SECONDS)
    )
    authenticator.forget_revocations(body.customer_id, body.token_id)
    after.add_task(authenticator.announce_customer_tokens_revoked, body.customer_id, body.token_id)
    return CustomerTokenRevocation(
        customer_id=revocation.customer_id, token_id=revocation.token_id, revoked_at=revocation.revoked_at
    )


PurchaseIdPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="The caller's purchase id.")]


@router.post(
    "/v1/purchases",
    status_code=202,
    tags=["purchases"],
    operation_id="create_purchase",
    responses=problem_responses(409),
)
async def create_purchase(body: PurchaseCreate, session: SessionDep, _: PrincipalDep) -> PurchaseAccepted:
    """Stores the purchase and one delivery per service in one transaction, and answers at once: points,
    coupons, recommendations and surveys receive it at least once, even if one of them is down right now."""
    await purchases.accept_purchase(session, body)
    return PurchaseAccepted(purchase_id=body.purchase_id)


@router.post(
    "/v1/purchases:batch",
    tags=["purchases"],
    operation_id="import_purchases",
    responses=problem_responses(413, 415),
    openapi_extra={"requestBody": {"required": True, "content": IMPORT_MEDIA_TYPES}},
)
async def import_purchases(request: Request, session: SessionDep, _: PrincipalDep) -> ImportReport:
    """History in bulk: one purchase per line as the body of `POST /v1/purchases` (NDJSON, or CSV naming the same
    fields), at most 10,000 lines or 32 MB. Each line is accepted, a duplicate, or rejected with its errors (the
    others are accepted all the same); each purchase is idempotent by its `purchase_id` and fanned out exactly as a
    single one, a customer's purchases in file order."""
    parsed = await purchases.read_batch(request.stream(), request.headers.get("content-type", ""))
    return await purchases.accept_batch(session, parsed)


@router.get(
    "/v1/purchases/{purchase_id}", tags=["purchases"], operation_id="get_purchase", responses=problem_responses(404)
)
async def get_purchase(purchase_id: PurchaseIdPath, session: SessionDep, _: PrincipalDep) -> Purchase:
    return Purchase.model_validate(await purchases.get_purchase(session, purchase_id))


@router.post(
    "/v1/purchases/{purchase_id}/refunds",
    status_code=202,
    tags=["purchases"],
    operation_id="create_refund",
    responses=problem_responses(404, 409),
)
async def create_refund(
    purchase_id: PurchaseIdPath, body: RefundCreate, session: SessionDep, _: PrincipalDep
) -> RefundAccepted:
    return RefundAccepted.model_validate(await purchases.accept_refund(session, purchase_id, body))


@router.get(
    "/v1/customers/{customer_id}/overview",
    tags=["customers"],
    operation_id="get_customer_overview",
    response_model=CustomerOverview,
    responses=problem_responses(404),
)
async def get_customer_overview(customer_id: CustomerIdPath, request: Request, _: PrincipalDep) -> ORJSONResponse:
    # returned as a response: the parts are stored as the services answered them, in the documented shape
    overview = await OVERVIEW.of(request.app).read(customer_id, request.state.request_id)
    return ORJSONResponse(overview)


@router.get("/v1/admin/deliveries", tags=["admin"], operation_id="list_event_deliveries")
async def list_event_deliveries(
    session: SessionDep,
    page: PageParamsDep,
    _: PrincipalDep,
    status: Annotated[DeliveryState | None, Query(description="Only deliveries in this state.")] = None,
) -> Page[Delivery]:
    rows, next_cursor = paginate(
        await events.list_deliveries(session, status, page.limit, page.after(int)), page.limit, key=lambda r: (r.id,)
    )
    return Page[Delivery](
        items=[Delivery.model_validate(r, from_attributes=True) for r in rows], next_cursor=next_cursor
    )


@router.post(
    "/v1/admin/deliveries/{delivery_id}/retry",
    status_code=202,
    tags=["admin"],
    operation_id="retry_event_delivery",
    responses=problem_responses(404),
)
async def retry_event_delivery(delivery_id: int, session: SessionDep, _: PrincipalDep) -> dict[str, str]:
    """Puts a delivery parked as `failed` back in the queue with a fresh attempt budget."""
    await events.redrive(session, delivery_id)
    return {"status": "pending"}
