"""The web console: static files (HTML, JS, CSS, SVG) from site/, on GET /console/{proxy+}.

Served by the API itself, so the console is same-origin with the API it calls: no CORS, and
the local API Gateway emulator serves it from template.yaml like every other route. It holds
no privileges: the browser calls the same public API as everyone else, with the key the user
typed. Standard library only (nothing of the gateway package), files read once per container.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

SITE = Path(__file__).resolve().parent / "site"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}

# Sent with every console response, errors and redirects included.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class Asset:
    def __init__(self, path: Path) -> None:
        self.body = path.read_text(encoding="utf-8")
        self.content_type = CONTENT_TYPES[path.suffix]
        self.etag = '"' + hashlib.sha256(self.body.encode()).hexdigest()[:32] + '"'


def load_site(root: Path = SITE) -> dict[str, Asset]:
    """Every text asset under root, by its path relative to root ("index.html", "js/main.js")."""
    return {path.relative_to(root).as_posix(): Asset(path) for path in sorted(root.rglob("*"))
            if path.is_file() and path.suffix in CONTENT_TYPES and not path.name.startswith(".")}


ASSETS = load_site()


def _response(status: int, body: str = "", headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "headers": {**SECURITY_HEADERS, **(headers or {})}, "body": body,
            "isBase64Encoded": False}


def _header(event: dict[str, Any], name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def _not_found() -> dict[str, Any]:
    return _response(404, "Not found\n", {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})


def serve(event: dict[str, Any]) -> dict[str, Any]:
    proxy = ((event.get("pathParameters") or {}).get("proxy") or "").strip("/")
    if not proxy:
        # API Gateway sends /console and /console/ to the same resource, keeping the slash in
        # `path`. Relative asset and API URLs need the slash: redirect relatively, which also
        # works under a stage prefix (/prod/console -> /prod/console/).
        if not (event.get("path") or "").endswith("/"):
            return _response(301, "", {"Location": "console/", "Cache-Control": "no-store"})
        proxy = "index.html"
    asset = ASSETS.get(proxy)  # a lookup, never a file-system path: no way out of site/
    if asset is None:
        return _not_found()
    headers = {"Content-Type": asset.content_type, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if _header(event, "if-none-match") == asset.etag:
        return _response(304, "", headers)
    return _response(200, asset.body, headers)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = serve(event)
    request_id = (event.get("requestContext") or {}).get("requestId")
    if request_id:
        response["headers"]["x-request-id"] = request_id
    return response
