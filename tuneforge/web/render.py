"""What every dashboard route answers with: the page shell (navigation, the key prompt, the fragment
it loads) and fragments, both under the Content-Security-Policy that keeps a page on this server."""

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Nothing but this server: scripts, styles, images and requests alike (the vendored assets included).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# The navigation, in its order.
PAGES = {
    "data": "Data",
    "jobs": "Jobs",
    "models": "Models",
    "playground": "Playground",
    "evaluations": "Evaluations",
    "operations": "Operations",
}


def page(request: Request, name: str, fragment: str, title: str) -> HTMLResponse:
    """The shell of page `name` (its navigation entry), which loads `fragment` with the caller's key."""
    auth = request.app.state.options.auth
    context = {"pages": PAGES, "current": name, "fragment": fragment, "title": title, "auth": auth}
    response = templates.TemplateResponse(request, "base.html", context)
    response.headers["Content-Security-Policy"] = CSP
    return response


def fragment(request: Request, template: str, **context) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response
