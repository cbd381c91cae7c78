"""The console's serving function (functions/console/app.py) and what it serves: every
response carries the security headers, paths map to site/ files only, and the static files
keep the promises the Content-Security-Policy and CONTRACT §9 rely on (no inline script or
style, no markup built from data, no storage but sessionStorage, nothing from elsewhere)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "functions" / "console"
SITE = CONSOLE / "site"
SOURCES = sorted(p for p in SITE.rglob("*") if p.is_file() and "vendor" not in p.parts)
SCRIPTS = [p for p in SOURCES if p.suffix == ".js"]
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@pytest.fixture(scope="module")
def console() -> Any:
    spec = importlib.util.spec_from_file_location("_console_app", CONSOLE / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_console_app"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("_console_app", None)


def event(path: str, proxy: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    recorded = json.loads((ROOT / "events" / "console" / "index.json").read_text())
    recorded["path"] = path
    recorded["resource"] = "/console/{proxy+}" if proxy is not None else "/console"
    recorded["pathParameters"] = {"proxy": proxy} if proxy is not None else None
    recorded["headers"] = {**recorded["headers"], **(headers or {})}
    return recorded


def get(console: Any, path: str, proxy: str | None = None, **headers: str) -> dict[str, Any]:
    return console.handler(event(path, proxy, headers), None)


def assert_secure(response: dict[str, Any]) -> None:
    headers = response["headers"]
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "Access-Control-Allow-Origin" not in headers  # same origin: no CORS at all


# ------------------------------------------------------------------------ the function


def test_console_slash_serves_the_page(console):
    response = get(console, "/console/")
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "text/html; charset=utf-8"
    assert 'for="api-key">API key</label>' in response["body"]
    assert_secure(response)


def test_console_without_slash_redirects_relatively(console):
    # GIVEN /console (API Gateway routes /console/ to the same resource, keeping the slash)
    response = get(console, "/console")
    # THEN a relative redirect, right under any stage prefix (/prod/console -> /prod/console/)
    assert response["statusCode"] == 301
    assert response["headers"]["Location"] == "console/"
    assert_secure(response)


@pytest.mark.parametrize("proxy, content_type", [
    ("js/main.js", "text/javascript; charset=utf-8"),
    ("style.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
    ("index.html", "text/html; charset=utf-8"),
])
def test_assets_with_their_types(console, proxy, content_type):
    response = get(console, f"/console/{proxy}", proxy)
    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == content_type
    assert response["body"] == (SITE / proxy).read_text()
    assert_secure(response)


@pytest.mark.parametrize("proxy", ["../app.py", "..%2Fapp.py", "js/../../app.py", "Makefile", "package.json",
                                   "missing.js", "js", "/etc/passwd", "site/index.html"])
def test_nothing_outside_site_and_unknown_is_404(console, proxy):
    response = get(console, f"/console/{proxy}", proxy)
    assert response["statusCode"] == 404
    assert response["body"] == "Not found\n"
    assert_secure(response)


def test_etag_revalidation(console):
    first = get(console, "/console/js/main.js", "js/main.js")
    again = get(console, "/console/js/main.js", "js/main.js", **{"If-None-Match": first["headers"]["ETag"]})
    assert again["statusCode"] == 304 and again["body"] == ""
    assert first["headers"]["Cache-Control"] == "no-cache"  # always revalidated: a deploy shows at once
    assert_secure(again)


def test_every_response_carries_the_request_id(console):
    response = get(console, "/console/")
    assert response["headers"]["x-request-id"] == event("/console/")["requestContext"]["requestId"]


# ------------------------------------------------------------------------ the static files


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_has_no_inline_script_or_style():
    parser = _Markup()
    parser.feed((SITE / "index.html").read_text())
    for tag, attrs in parser.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "script":
            assert attrs.get("src"), "every script is a file (script-src 'self')"
        assert tag != "style"
        assert tag != "base"  # base-uri 'none'


def test_page_names_the_contract_controls():
    page = (SITE / "index.html").read_text()
    assert re.search(r'<label for="api-key">API key</label>', page)
    assert re.search(r'<button type="submit" class="button">Sign in</button>', page)
    views = "\n".join(p.read_text() for p in SCRIPTS)
    for name in ("Create tenant", "Create key", "Revoke", "Download CSV"):
        assert f'"{name}"' in views, name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(SITE).as_posix())
def test_scripts_never_build_markup_from_strings(script):
    code = script.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "localStorage", "setAttribute(\"style\"", "cssText"):
        assert sink not in code, f"{script.name} uses {sink}"


def test_nothing_is_loaded_from_elsewhere():
    for source in SOURCES:
        urls = re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", source.read_text())
        # the SVG namespace and placeholder text are not requests
        assert set(urls) <= {"http://www.w3.org", "https://example.com"}, (source.name, urls)


def test_the_key_lives_in_session_storage_only():
    api = (SITE / "js" / "api.js").read_text()
    assert "sessionStorage.setItem" in api and "sessionStorage.clear()" in api
    # and goes out only as a header, never in a URL
    assert "Authorization: `Bearer ${key}`" in api
    assert "searchParams.set(\"key\"" not in api


def test_vendored_libraries_come_from_the_lock_file():
    lock = json.loads((CONSOLE / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/chart.js"]["version"] == \
        json.loads((CONSOLE / "package.json").read_text())["dependencies"]["chart.js"]
    assert 'src="vendor/chart.umd.min.js"' in (SITE / "index.html").read_text()
    assert "site/vendor/chart.umd.min.js" in (CONSOLE / "Makefile").read_text()
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "functions/console/site/vendor/" in ignored and "node_modules/" in ignored
