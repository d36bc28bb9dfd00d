"""The web page at `/`: static files (no build step) that use this service's own /v1 API and nothing else.

Its Content-Security-Policy lets the page load and fetch from this origin only and run no inline script, so
an item title that holds markup could not run even if the page ever rendered it as markup (it does not).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def add_page(app: FastAPI) -> None:
    """Serve the page at `/` and its assets under `/static/` (both outside the OpenAPI document)."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The page itself, with the policy that keeps it on this origin."""
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
