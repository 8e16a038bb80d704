"""Webhook endpoints and their delivery logs (admin). Thin: HTTP in, `gateway.webhooks.domain`, HTTP out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import BackgroundTasks, Path, Query, Request, Response

from gateway.state import SETTINGS, WEBHOOKS
from gateway.webhooks import domain
from gateway.webhooks.schemas import (
    DeliveryStatus,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointUpdate,
    WebhookSecret,
)
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.pagination import Page, PageParamsDep, paginate

__all__ = ["router"]

router = service_router(responses=problem_responses(401, 403, 422, 429), tags=["webhooks"])
EndpointIdPath = Annotated[UUID, Path(description="The webhook endpoint's id.")]
_NOT_FOUND = problem_responses(404)


def _allow_private(request: Request) -> bool:
    return SETTINGS.of(request.app).webhook_allow_private


@router.post("/v1/webhook-endpoints", status_code=201, operation_id="create_webhook_endpoint")
async def create_webhook_endpoint(
    body: WebhookEndpointCreate, session: SessionDep, request: Request
) -> WebhookEndpointCreated:
    """Registers an endpoint for some event types. The signing secret is shown in this answer only."""
    created = await domain.create_endpoint(
        session, body.url, body.events, body.description, allow_private=_allow_private(request)
    )
    return created


@router.get("/v1/webhook-endpoints", operation_id="list_webhook_endpoints")
async def list_webhook_endpoints(session: SessionDep, page: PageParamsDep) -> Page[WebhookEndpoint]:
    rows, next_cursor = paginate(
        await domain.list_endpoints(session, page.limit, page.after(datetime, UUID)),
        page.limit,
        key=lambda r: (r.created_at.isoformat(), str(r.id)),
    )
    return Page[WebhookEndpoint](items=rows, next_cursor=next_cursor)


@router.get("/v1/webhook-endpoints/{endpoint_id}", operation_id="get_webhook_endpoint", responses=_NOT_FOUND)
async def get_webhook_endpoint(endpoint_id: EndpointIdPath, session: SessionDep) -> WebhookEndpoint:
    return await domain.get_endpoint(session, endpoint_id)


@router.patch("/v1/webhook-endpoints/{endpoint_id}", operation_id="update_webhook_endpoint", responses=_NOT_FOUND)
async def update_webhook_endpoint(
    endpoint_id: EndpointIdPath, body: WebhookEndpointUpdate, session: SessionDep, request: Request
) -> WebhookEndpoint:
    """Changes the URL, the event types or the description; `active` false pauses deliveries, true resumes
    them (also after the endpoint was disabled for failing)."""
    row = await domain.update_endpoint(
        session, endpoint_id, body.model_dump(exclude_none=True), allow_private=_allow_private(request)
    )
    return row


@router.delete(
    "/v1/webhook-endpoints/{endpoint_id}", status_code=204, operation_id="delete_webhook_endpoint", responses=_NOT_FOUND
)
async def delete_webhook_endpoint(endpoint_id: EndpointIdPath, session: SessionDep) -> Response:
    await domain.delete_endpoint(session, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/secret-rotations",
    status_code=201,
    operation_id="rotate_webhook_secret",
    responses=_NOT_FOUND,
)
async def rotate_webhook_secret(endpoint_id: EndpointIdPath, session: SessionDep, request: Request) -> WebhookSecret:
    """A new secret, shown once; the old one keeps signing alongside it (two signatures per message) until
    `previous_secret_expires_at`, 24 hours from now."""
    overlap = timedelta(hours=SETTINGS.of(request.app).webhook_secret_overlap_hours)
    return await domain.rotate_secret(session, endpoint_id, overlap)


@router.get(
    "/v1/webhook-endpoints/{endpoint_id}/deliveries", operation_id="list_webhook_deliveries", responses=_NOT_FOUND
)
async def list_webhook_deliveries(
    endpoint_id: EndpointIdPath,
    session: SessionDep,
    page: PageParamsDep,
    status: Annotated[DeliveryStatus | None, Query(description="Only deliveries in this state.")] = None,
) -> Page[WebhookDelivery]:
    """Newest first; each delivery with every attempt: when, HTTP status, latency, the response's first bytes."""
    rows, next_cursor = paginate(
        await domain.list_deliveries(session, endpoint_id, status, page.limit, page.after(int)),
        page.limit,
        key=lambda r: (r.id,),
    )
    return Page[WebhookDelivery](items=rows, next_cursor=next_cursor)


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    operation_id="retry_webhook_delivery",
    responses=problem_responses(404, 409),
)
async def retry_webhook_delivery(
    delivery_id: Annotated[int, Path(ge=1, lt=2**63)],
    session: SessionDep,
    request: Request,
    background: BackgroundTasks,
) -> dict[str, object]:
    """Sends the delivery again now (same `webhook-id`), with a fresh retry window: after fixing a receiver,
    or when the partner lost what it was sent."""
    result = await domain.redrive(session, delivery_id)
    dispatcher = WEBHOOKS.get(request.app)
    if dispatcher is not None:
        background.add_task(dispatcher.wake)  # after the commit, which comes before the answer
    return result
