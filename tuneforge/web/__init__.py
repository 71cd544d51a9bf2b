"""The dashboard: pages served by `tuneforge serve` at `/`, on the API's own data and keys.

Server-rendered Jinja2 fragments that htmx swaps into one page shell, and uPlot for the curves: both
vendored under `static/vendor/` (with their licences), so a page asks nothing of any other host (its
Content-Security-Policy says so). The shell holds no data and needs no key; every fragment and data
route takes the project from the same `Authorization: Bearer` key as the API, which the page keeps in
the browser's session storage once entered (no prompt with `serve --no-auth`).

`pages.py` (data, jobs), `model_pages.py` (models, their lineage, downloads and reports),
`playground.py` (base against tuned, feedback), `evaluations.py` (reports; evaluations started from
a model's page) and `operations.py` (the request log as charts) are the routes, thin as the API's
are; `views.py` and `lineage.py` turn registry rows into what the templates show; `links.py` signs
the links a browser follows without its key.
"""


def install_dashboard(app) -> None:
    """Add the dashboard's pages and assets to the API's app (`tuneforge serve` does)."""
    from fastapi.staticfiles import StaticFiles

    from tuneforge.web import evaluations, model_pages, operations, pages, playground
    from tuneforge.web.render import STATIC

    for module in (pages, model_pages, playground, evaluations, operations):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="dashboard-static")
