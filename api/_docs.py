"""The interactive API reference at ``/docs``: Swagger UI over ``/openapi.json``, served from
the assets shipped in this package (``static/swagger-ui``, swagger-ui-dist under its Apache-2.0
licence, kept beside it), so the page works on a machine with no way out to the internet.

The page, its assets and the OpenAPI document are open, like ``/healthz``: they describe the
shape of the API (routes, parameters, models), which anyone holding the package can read, and
never a byte of stored data. Trying a route from the page needs an API key (its *Authorize*
button), as any other request does.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"
ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"


def add_docs(app: FastAPI) -> None:
    """``/docs`` (the page) and ``/docs/assets/...`` (its script, style sheet and icon)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} {app.version}: API reference",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            oauth2_redirect_url=None,
            # no badge fetched from validator.swagger.io: the page asks nothing of other hosts
            swagger_ui_parameters={"validatorUrl": None},
        )
