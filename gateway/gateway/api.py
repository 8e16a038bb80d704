"""The gateway's own routes. Authentication and scope checks already happened in the front door
(`gateway.proxy`); these routes read the principal it attached to the request."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import Depends, Request, Response

from gateway import api_keys
from gateway.principals import Authenticator, Principal
from gateway.schemas import ApiKey, ApiKeyCreate, ApiKeyCreated, CustomerToken, CustomerTokenCreate
from kit.db import SessionDep, service_router
from kit.errors import Unauthorized, problem_responses
from kit.pagination import Page, PageParamsDep, paginate


def get_principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthorized()
    return principal  # type: ignore[no-any-return]


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_authenticator(request: Request) -> Authenticator:
    return request.app.state.authenticator  # type: ignore[no-any-return]


AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]

router = service_router(responses=problem_responses(401, 403, 422, 429))


@router.post("/v1/api-keys", status_code=201, tags=["api-keys"], operation_id="create_api_key")
async def create_api_key(body: ApiKeyCreate, session: SessionDep, _: PrincipalDep) -> ApiKeyCreated:
    return ApiKeyCreated.model_validate(await api_keys.create(session, body.name, body.scopes))


@router.get("/v1/api-keys", tags=["api-keys"], operation_id="list_api_keys")
async def list_api_keys(session: SessionDep, page: PageParamsDep, _: PrincipalDep) -> Page[ApiKey]:
    rows, next_cursor = paginate(
        await api_keys.list_keys(session, page.limit, page.after),
        page.limit,
        key=lambda r: (r.created_at.isoformat(), str(r.id)),
    )
    return Page[ApiKey](items=[ApiKey.model_validate(r._mapping) for r in rows], next_cursor=next_cursor)


@router.delete(
    "/v1/api-keys/{key_id}",
    status_code=204,
    tags=["api-keys"],
    operation_id="revoke_api_key",
    responses=problem_responses(404),
)
async def revoke_api_key(
    key_id: UUID, session: SessionDep, authenticator: AuthenticatorDep, _: PrincipalDep
) -> Response:
    authenticator.forget_api_key(await api_keys.revoke(session, key_id))
    return Response(status_code=204)


@router.post("/v1/customer-tokens", status_code=201, tags=["customer-tokens"], operation_id="create_customer_token")
async def create_customer_token(
    body: CustomerTokenCreate, authenticator: AuthenticatorDep, _: PrincipalDep
) -> CustomerToken:
    token, expires_at = authenticator.mint_customer_token(body.customer_id, body.ttl_seconds)
    return CustomerToken(token=token, expires_at=expires_at)
