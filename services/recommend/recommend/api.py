"""HTTP routes of the recommend service: thin, each a call into the domain layer.

The two hot reads (recommendations, model info) use a plain router: they read one statement from the serving
pool (or nothing at all) and need no transaction; everything else runs in the request's transaction."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from kit.auth import requires
from kit.db import SessionDep, service_router
from kit.errors import problem_responses
from kit.json import ORJSONResponse
from kit.state import AppState
from kit.types import IDENTIFIER_PATTERN, CustomerIdPath
from recommend import service
from recommend.engine import Engine
from recommend.model import Mode
from recommend.schemas import (
    ImportResult,
    ModelInfo,
    Preferences,
    PreferencesIn,
    Product,
    ProductsPut,
    ProductsPutResult,
    Recommendations,
    RetrainAccepted,
    SimilarProducts,
)

router = service_router(tags=["recommend"])
reads = APIRouter(tags=["recommend"])

ProductIdPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN, description="Product id.")]


ENGINE: AppState[Engine] = AppState("engine")
EngineDep = Annotated[Engine, Depends(ENGINE)]


@router.put(
    "/v1/products",
    dependencies=[requires("recommend:write")],
    operation_id="upsert_recommend_products",
    response_model=ProductsPutResult,
    responses=problem_responses(422),
)
async def upsert_products(body: ProductsPut, session: SessionDep) -> ProductsPutResult:
    """Create or update up to 10,000 products; `changed` counts those that were new or different."""
    return await service.put_products(session, body)


@router.get(
    "/v1/products/{product_id}",
    dependencies=[requires("recommend:read")],
    operation_id="get_recommend_product",
    response_model=Product,
    responses=problem_responses(404),
)
async def get_product(product_id: ProductIdPath, session: SessionDep) -> Product:
    return await service.get_product(session, product_id)


@router.get(
    "/v1/products/{product_id}/similar",
    dependencies=[requires("recommend:read")],
    operation_id="list_similar_products",
    response_model=SimilarProducts,
    responses=problem_responses(404),
)
async def similar_products(
    product_id: ProductIdPath,
    session: SessionDep,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SimilarProducts:
    return await service.similar_products(session, engine, product_id, limit=limit)


@router.post(
    "/v1/interactions:import",
    dependencies=[requires("recommend:write")],
    operation_id="import_interactions",
    response_model=ImportResult,
    responses=problem_responses(415, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_interactions(request: Request, session: SessionDep) -> ImportResult:
    """Purchase history as CSV (header `customer_id,product_id,quantity,occurred_at`) or JSON lines, streamed."""
    return await service.import_interactions(session, request.stream(), request.headers.get("content-type", ""))


@router.put(
    "/v1/customers/{customer_id}/preferences",
    dependencies=[requires("recommend:write", customer=True)],
    operation_id="put_recommend_preferences",
    response_model=Preferences,
    responses=problem_responses(404, 422),
)
async def put_preferences(customer_id: CustomerIdPath, body: PreferencesIn, session: SessionDep) -> Preferences:
    return await service.put_preferences(session, customer_id, body)


@router.get(
    "/v1/customers/{customer_id}/preferences",
    dependencies=[requires("recommend:read", customer=True)],
    operation_id="get_recommend_preferences",
    response_model=Preferences,
    responses=problem_responses(404),
)
async def get_preferences(customer_id: CustomerIdPath, session: SessionDep) -> Preferences:
    return await service.get_preferences(session, customer_id)


@reads.get(
    "/v1/customers/{customer_id}/recommendations",
    dependencies=[requires("recommend:read", customer=True)],
    operation_id="get_customer_recommendations",
    response_model=Recommendations,
    responses=problem_responses(404, 422),
)
async def recommendations(
    customer_id: CustomerIdPath,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    category: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    mode: Mode = Mode.mixed,
) -> ORJSONResponse:
    # returned as a response: FastAPI would validate and serialise the body a second time (measured: ~20% of
    # the request's CPU); `response_model` still documents it
    body = await service.recommendations(engine, customer_id, limit=limit, category=category, mode=mode)
    return ORJSONResponse(body)


@reads.get(
    "/v1/recommend/model",
    dependencies=[requires("recommend:read")],
    operation_id="get_recommend_model",
    response_model=ModelInfo,
)
async def get_model(engine: EngineDep) -> ModelInfo:
    return service.model_info(engine)


@router.post(
    "/v1/recommend/model/retrain",
    dependencies=[requires()],
    operation_id="retrain_recommend_model",
    response_model=RetrainAccepted,
    status_code=202,
    responses=problem_responses(409),
)
async def retrain(session: SessionDep, engine: EngineDep) -> RetrainAccepted:
    """Start training a new model in the background; serving goes on with the current one until it is swapped in."""
    return await service.retrain(session, engine)
