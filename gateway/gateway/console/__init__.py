"""The console at /console/: the programme run by the people who own it (docs/console.md).

Server-rendered HTML (Jinja2), charts as SVG drawn on the server, no script and no asset from another host. It
signs people in with a key into a session of its own and then calls the public API's operations as that key
(`caller`), so the route table's and the services' rules decide what each page shows and allows.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Response
from fastapi.openapi.docs import get_swagger_ui_html

from gateway.console.pages import router
from kit.errors import NotFound

__all__ = ["install"]

_DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon.png": "image/png"}


def install(app: FastAPI) -> None:
    """The console's routes, and /docs served with Swagger UI's files from the gateway itself."""
    app.include_router(router)
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", None) != "/docs"]
    assets = files("fastapi_offline") / "static"

    async def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )

    async def docs_asset(asset: str) -> Response:
        if asset not in _DOCS_ASSETS:
            raise NotFound("No such file.")
        return Response(
            (assets / asset).read_bytes(), media_type=_DOCS_ASSETS[asset], headers={"Cache-Control": "max-age=86400"}
        )

    app.add_api_route("/docs", docs, include_in_schema=False)
    app.add_api_route("/docs/assets/{asset}", docs_asset, include_in_schema=False)
