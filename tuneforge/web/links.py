"""Signed links: downloads, model cards' images and evaluation reports the browser fetches by address.

A page keeps its API key in session storage and sends it as a header; an `<a href>`, an `<img src>`
or a report opened in a new tab cannot. So the fragment that shows such a link (rendered for a
caller whose key the server just checked) signs it: the key's prefix, an expiry and an HMAC of the
path and expiry keyed by the key's stored digest. Nothing new to keep secret and nothing held in a
server process (another server on the same registry checks the same link), and revoking the key
revokes its links. With `--no-auth` every caller is the default project and links are plain paths.
"""

import hashlib
import hmac
import time
from urllib.parse import urlencode

from fastapi import Request

from tuneforge.registry import access
from tuneforge.serve.deps import bearer_key, project
from tuneforge.serve.protocol import APIError

LINK_SECONDS = 3600  # a page left open for an hour still downloads; a copied link stops working after


def _signature(digest: str, path: str, expires: int) -> str:
    return hmac.new(digest.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def signed(request: Request, path: str, **query) -> str:
    """`path` (with `query`) as a link the caller's browser can follow without its key."""
    link_query = dict(query)
    if request.app.state.options.auth:
        key = bearer_key(request)
        expires = int(time.time()) + LINK_SECONDS
        signature = _signature(access.digest(key), path, expires)
        link_query.update(k=key[: access.KEY_PREFIX_LENGTH], e=expires, s=signature)
    return path + ("?" + urlencode(link_query) if link_query else "")


def link_project(request: Request) -> str:
    """The project of a signed link's key (or of an Authorization header, as the API takes it)."""
    if not request.app.state.options.auth or bearer_key(request):
        return project(request)
    prefix, expires, signature = (request.query_params.get(name, "") for name in ("k", "e", "s"))
    refused = APIError(
        401,
        "This link is not signed for you, or it expired: open it again from the dashboard.",
        code="invalid_link",
    )
    if not (prefix and expires.isdigit() and signature) or int(expires) < time.time():
        raise refused
    for key in access.keys_with_prefix(prefix):
        if key.project != access.OPERATOR and hmac.compare_digest(
            _signature(key.sha256, request.url.path, int(expires)), signature
        ):
            request.state.project = key.project
            return key.project
    raise refused
