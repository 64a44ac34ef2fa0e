"""A FastAPI app for the browser tests (tests/e2e/test_fastapi.py), served by uvicorn:
``uvicorn --app-dir tests e2e.fastapi_site:app``.

- ``/``: a page with ``csrf_meta()``, bastion.js and its own (nonce'd) script, whose
  buttons call an action and a protected route with ``bastion.call``.
- ``POST /api/notes``: a plain route under ``Depends(bastion.protect)``.
- ``/docs`` and ``/redoc``: FastAPI's own pages, the actions merged into its
  ``/openapi.json`` (``bastion.include_in_openapi``), with Swagger UI's and ReDoc's files
  served from here (this machine reaches no CDN), under the policies that
  docs/guides/fastapi.md gives them (``docs_policies`` reads them from the guide);
  ``/strict/docs``: the same Swagger UI page under the strict default policy.

Settings come from the environment: ``BASTION_SECRET_KEY``, ``BASTION_ALLOWED_ORIGINS``.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict

from bastion import Bastion, public
from bastion.stores import MemoryStore

from .docs_policies import REDOC_CSP, SWAGGER_CSP

try:
    import fastapi_offline  # Swagger UI's and ReDoc's files, for a machine without a CDN
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "the browser tests of /docs need fastapi-offline (the dev extra)"
    ) from missing

ASSETS = Path(fastapi_offline.__file__).parent / "static"

PAGE = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Notes</title>{{ csrf_meta() }}
<style nonce="{{ csp_nonce() }}">
  body { font: 16px/1.5 system-ui, sans-serif; margin: 2rem; }
  output { display: block; font-family: monospace; margin: .5rem 0; }
</style></head>
<body data-action="{{ action_url('add_note') }}">
  <h1>Notes</h1>
  <p><button id="action">bastion.call an action</button>
     <button id="route">bastion.call a protected route</button></p>
  <output id="action-reply">(no call yet)</output>
  <output id="route-reply">(no call yet)</output>
  {{ bastion_script() }}
  <script nonce="{{ csp_nonce() }}">
    function show(id) {
      return function (reply) { document.getElementById(id).textContent = JSON.stringify(reply); };
    }
    var note = {text: "from the page"};
    document.getElementById("action").addEventListener("click", function () {
      bastion.call(document.body.dataset.action, note).then(show("action-reply"));
    });
    document.getElementById("route").addEventListener("click", function () {
      bastion.call("/api/notes", note).then(show("route-reply"));
    });
  </script>
</body></html>
"""


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Saved(BaseModel):
    id: int
    text: str


bastion = Bastion(store=MemoryStore())
NOTES: list[str] = []


@bastion.action(policy=public, rate=None)
def add_note(data: Note) -> Saved:
    """Add a note (the action)."""
    NOTES.append(data.text)
    return Saved(id=len(NOTES), text=data.text)


app = FastAPI(title="Notes", docs_url=None, redoc_url=None)
bastion.mount(app)
bastion.handle_refusals(app)
bastion.include_in_openapi(app, title="Notes actions")
bastion.add_security_headers(app, csp_for={"/docs": SWAGGER_CSP, "/redoc": REDOC_CSP})
app.mount("/assets", StaticFiles(directory=ASSETS), name="assets")
templates = Jinja2Templates(env=jinja2.Environment(autoescape=True))
bastion.templates(templates)


@app.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(templates.env.from_string(PAGE).render(request=request))


@app.post("/api/notes", dependencies=[Depends(bastion.protect)])
async def create_note(note: Note) -> Saved:
    NOTES.append(note.text)
    return Saved(id=len(NOTES), text=note.text)


@app.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Notes - Swagger UI",
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url="/assets/swagger-ui-bundle.js",
        swagger_css_url="/assets/swagger-ui.css",
        swagger_favicon_url="/assets/favicon.png",
        # Each operation shows its operationId: an action's is its registered name.
        swagger_ui_parameters={"displayOperationId": True},
    )


@app.get("/strict/docs", include_in_schema=False)
async def docs_under_the_strict_policy() -> HTMLResponse:
    """The same Swagger UI page on a path that was not relaxed: what /docs would be
    without ``csp_for``."""
    return await docs()


@app.get("/docs/oauth2-redirect", include_in_schema=False)
async def oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@app.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title="Notes - ReDoc",
        redoc_js_url="/assets/redoc.standalone.js",
        redoc_favicon_url="/assets/favicon.png",
        with_google_fonts=False,
    )
